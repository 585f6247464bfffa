"""The offline preview provider: a deterministic, readable placeholder of the compiled scene."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import io
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from caverna.brand.registry import PackRegistry
from caverna.imaging import DeliveryFormat, ImageMetadata, process_image, sniff_format
from caverna.prompting.dialects.base import CompiledPrompt
from caverna.prompting.engine import PromptEngine
from caverna.providers.base import GenerationRequest, ImageProvider, ProviderError
from caverna.providers.preview import (
    MODEL,
    SKIN,
    PreviewProvider,
    draw_preview,
    hex_rgb,
    kelvin_rgb,
    render_preview,
)

INVITATION = "onboarding/the-invitation"
RGB = tuple[int, int, int]


@pytest.fixture(scope="module")
def engine() -> PromptEngine:
    return PromptEngine(PackRegistry())


@pytest.fixture(scope="module")
def invitation(engine: PromptEngine) -> CompiledPrompt:
    return engine.compile({"frame": INVITATION, "seed": 3}, "preview")


def scene_with(compiled: CompiledPrompt, **changes: Any) -> dict[str, Any]:
    """A deep copy of the compiled scene; `character__placement=...` edits a nested key."""
    scene = copy.deepcopy(compiled.payload)
    for key, value in changes.items():
        target = scene
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    return scene


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def color_mask(image: Image.Image, color: RGB) -> Image.Image:
    """255 where the pixel is exactly `color` (flat fills are exact away from their edges)."""
    bands = [
        band.point(lambda v, target=target: 255 if v == target else 0)
        for band, target in zip(image.convert("RGB").split(), color, strict=True)
    ]
    return ImageChops.multiply(ImageChops.multiply(bands[0], bands[1]), bands[2])


def centroid_x(mask: Image.Image) -> float:
    columns = list(mask.resize((mask.width, 1), Image.Resampling.BOX).tobytes())
    total = sum(columns)
    assert total > 0, "colour not found in the image"
    return sum(x * value for x, value in enumerate(columns)) / total


def brightness(image: Image.Image, box: tuple[int, int, int, int]) -> float:
    return float(ImageStat.Stat(image.crop(box).convert("L")).mean[0])


# --- the picture ----------------------------------------------------------------------------


def test_size_matches_the_scene(invitation: CompiledPrompt) -> None:
    image = decoded(render_preview(invitation.payload, prompt=invitation.prompt, delivery="webp"))
    assert image.size == (invitation.payload["width"], invitation.payload["height"]) == (768, 1368)
    wide = scene_with(invitation, width=1024, height=576)
    assert draw_preview(wide, prompt="p").size == (1024, 576)


def test_same_inputs_same_bytes_and_any_change_shows(
    engine: PromptEngine, invitation: CompiledPrompt
) -> None:
    scene, prompt = invitation.payload, invitation.prompt
    first = render_preview(scene, prompt=prompt, delivery="webp")
    assert render_preview(copy.deepcopy(scene), prompt=prompt, delivery="webp") == first

    other_seed = engine.compile({"frame": INVITATION, "seed": 4}, "preview")
    assert render_preview(other_seed.payload, prompt=prompt, delivery="webp") != first
    other_pose = scene_with(invitation, pose__id="arms-crossed")
    assert render_preview(other_pose, prompt=prompt, delivery="webp") != first
    assert render_preview(scene, prompt="At dusk: " + prompt, delivery="webp") != first


@pytest.mark.parametrize("delivery", ["webp", "png", "avif"])
def test_delivery_format_is_honoured(invitation: CompiledPrompt, delivery: DeliveryFormat) -> None:
    data = render_preview(invitation.payload, prompt=invitation.prompt, delivery=delivery)
    assert sniff_format(data) == delivery
    assert render_preview(invitation.payload, prompt=invitation.prompt, delivery=delivery) == data


@pytest.mark.parametrize("delivery", ["webp", "png"])
def test_the_pipeline_never_reencodes_a_preview(
    invitation: CompiledPrompt, delivery: DeliveryFormat
) -> None:
    data = render_preview(invitation.payload, prompt=invitation.prompt, delivery=delivery)
    meta = ImageMetadata("img", invitation.prompt, None, {}, 3, "preview", MODEL, "t", "v")
    assert process_image(data, delivery=delivery, metadata=meta).reencoded is False


@pytest.mark.parametrize(
    ("placement", "low", "high"),
    [("left-third", 0.25, 0.42), ("center", 0.42, 0.58), ("right-third", 0.58, 0.75)],
)
def test_character_stands_on_the_requested_third(
    invitation: CompiledPrompt, placement: str, low: float, high: float
) -> None:
    scene = scene_with(invitation, character__placement=placement, text_space="none")
    image = draw_preview(scene, prompt="p")
    outfit = hex_rgb(scene["outfit"]["color"], (0, 0, 0))
    x = centroid_x(color_mask(image, outfit)) / image.width
    assert low < x < high
    assert low < centroid_x(color_mask(image, SKIN)) / image.width < high


def test_facing_mirrors_the_figure(invitation: CompiledPrompt) -> None:
    def skin_offset(facing: str) -> float:
        scene = scene_with(invitation, character__facing=facing, text_space="none")
        image = draw_preview(scene, prompt="p")
        return centroid_x(color_mask(image, SKIN)) - image.width / 2

    right = skin_offset("three-quarter-right")
    left = skin_offset("three-quarter-left")
    assert right > 10
    assert left < -10
    assert right == pytest.approx(-left, abs=2.0)  # the same figure, mirrored about its axis
    assert abs(skin_offset("viewer")) < 2.0
    assert skin_offset("right") > right  # a profile turns further than three-quarters


def test_text_space_band_lightens_only_its_side(invitation: CompiledPrompt) -> None:
    plain = draw_preview(scene_with(invitation, text_space="none"), prompt="p")
    banded = draw_preview(scene_with(invitation, text_space="right"), prompt="p")
    width, height = plain.size
    right = (width - width // 3 + 4, height // 3, width - 4, 2 * height // 3)
    assert brightness(banded, right) > brightness(plain, right) + 8
    left_two_thirds = (0, 0, width - width // 3 - 4, height)
    assert (
        ImageChops.difference(plain.crop(left_two_thirds), banded.crop(left_two_thirds)).getbbox()
        is None
    )


def test_key_light_glows_on_its_side(invitation: CompiledPrompt) -> None:
    lit_left = draw_preview(scene_with(invitation, lighting__key_side="left"), prompt="p")
    lit_right = draw_preview(scene_with(invitation, lighting__key_side="right"), prompt="p")
    width, height = lit_left.size
    left_edge = (0, height // 4, width // 8, height // 2)
    right_edge = (width - width // 8, height // 4, width, height // 2)
    assert brightness(lit_left, left_edge) > brightness(lit_right, left_edge) + 10
    assert brightness(lit_right, right_edge) > brightness(lit_left, right_edge) + 10


def test_held_props_appear_in_their_colours(engine: PromptEngine) -> None:
    compiled = engine.compile({"frame": "onboarding/lighting-the-torch", "seed": 3}, "preview")
    props = compiled.payload["props"]
    assert [p["hands"] for p in props] == [1, 0]
    without = scene_with(compiled, props=[])
    colour = hex_rgb(props[0]["color"], (0, 0, 0))
    with_props = color_mask(draw_preview(compiled.payload, prompt="p"), colour)
    without_props = color_mask(draw_preview(without, prompt="p"), colour)
    gained = ImageStat.Stat(with_props).sum[0] - ImageStat.Stat(without_props).sum[0]
    assert gained > 255 * 500  # a torch-sized disc of the prop's colour


def test_warm_light_is_red_and_cool_light_is_blue() -> None:
    warm, neutral, cool = kelvin_rgb(2700), kelvin_rgb(6600), kelvin_rgb(10000)
    assert warm[0] == 255
    assert warm[2] < 170
    assert min(neutral) >= 250
    assert cool[2] == 255
    assert cool[0] < 220


# --- the provider ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_pool() -> Iterator[ProcessPoolExecutor]:
    pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("in_pool", [False, True], ids=["threads", "process-pool"])
async def test_generate_reports_progress_and_returns_delivery_bytes(
    invitation: CompiledPrompt, in_pool: bool, request: pytest.FixtureRequest
) -> None:
    seen: list[float] = []
    workers: set[int] = set()

    async def progress(fraction: float) -> None:
        seen.append(fraction)

    pool: ProcessPoolExecutor | None = request.getfixturevalue("image_pool") if in_pool else None
    provider = PreviewProvider(pool)
    if pool is not None:
        workers = set(pool._processes)  # started on first use, so empty here
    assert isinstance(provider, ImageProvider)
    generation = GenerationRequest(job_id="job-1", compiled=invitation, delivery="png")
    result = await provider.generate(generation, progress)
    if pool is not None:  # the drawing ran in the pool's process, not in this one
        assert not workers
        assert len(pool._processes) == 1

    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen) >= 2
    assert seen[0] > 0
    assert seen[-1] <= 1
    assert sniff_format(result.data) == "png"
    assert result.content_type == "image/png"
    assert (provider.name, result.model, result.cost_usd) == ("preview", MODEL, 0.0)
    assert result.seed == invitation.seed == 3
    assert result.latency_ms > 0
    assert result.data == render_preview(
        invitation.payload, prompt=invitation.prompt, delivery="png"
    )


async def test_rendering_does_not_block_the_event_loop(invitation: CompiledPrompt) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.002)

    async def progress(_: float) -> None:
        return None

    task = asyncio.create_task(ticker())
    request = GenerationRequest(job_id="job-2", compiled=invitation, delivery="webp")
    await PreviewProvider().generate(request, progress)
    done.set()
    await task
    assert ticks >= 5


async def test_other_dialects_are_an_invalid_request(engine: PromptEngine) -> None:
    compiled = engine.compile({"frame": INVITATION, "seed": 3}, "stability")

    async def progress(_: float) -> None:
        raise AssertionError("no progress for a refused request")

    request = GenerationRequest(job_id="job-3", compiled=compiled, delivery="webp")
    with pytest.raises(ProviderError) as caught:
        await PreviewProvider().generate(request, progress)
    assert caught.value.code == "invalid_request"
    assert caught.value.retryable is False


async def test_a_broken_scene_is_an_invalid_request(invitation: CompiledPrompt) -> None:
    async def progress(_: float) -> None:
        return None

    for payload in ({"height": 100}, {"width": 10**6, "height": 100}):
        broken = dataclasses.replace(invitation, payload=payload)
        request = GenerationRequest(job_id="job-4", compiled=broken, delivery="webp")
        with pytest.raises(ProviderError) as caught:
            await PreviewProvider().generate(request, progress)
        assert caught.value.code == "invalid_request"


def test_provider_errors_survive_a_process_boundary() -> None:
    original = ProviderError("rate_limited", "slow down", retryable=True, retry_after=2.5)
    error = pickle.loads(pickle.dumps(original))
    assert (error.code, error.message, error.retryable, error.retry_after) == (
        "rate_limited",
        "slow down",
        True,
        2.5,
    )
