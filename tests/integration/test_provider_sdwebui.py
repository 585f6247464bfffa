"""The SD WebUI adapter against a WebUI fake speaking the real wire protocol over loopback."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from caverna.prompting.dialects.base import CompiledPrompt
from caverna.providers.base import ErrorKind, GenerationRequest, ProviderError
from caverna.providers.http import new_session
from caverna.providers.sdwebui import SDWebUIConfig, SDWebUIProvider
from tests.fakes.sdwebui_server import (
    Canned,
    SDWebUIFake,
    Slow,
    api_missing,
    malformed_json,
    not_an_image,
    out_of_memory,
    render_png,
    sampler_not_found,
    server_error,
    unauthorized,
    validation_error,
)
from tests.integration.intake_helpers import generate_behind_a_full_gate
from tests.integration.provider_helpers import Progress, compile_for, generation_request

USER, PASSWORD = "artist", "pa55:word"
SIZE = (64, 64)
POLL = 0.02


@pytest.fixture(scope="module")
def compiled() -> CompiledPrompt:
    return compile_for("sdwebui")


@pytest.fixture
def request_for(compiled: CompiledPrompt) -> GenerationRequest:
    return generation_request(compiled, job_id="job-0002")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as client:
        yield client


@pytest.fixture
async def fake() -> AsyncIterator[SDWebUIFake]:
    server = SDWebUIFake(auth=(USER, PASSWORD), duration=0.12, image_size=SIZE)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def refused_url() -> str:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def make(
    base_url: str,
    session: aiohttp.ClientSession,
    *,
    username: str | None = USER,
    password: str | None = PASSWORD,
    timeout: float = 5.0,
) -> SDWebUIProvider:
    config = SDWebUIConfig(
        base_url=base_url,
        username=username,
        password=password,
        progress_interval=POLL,
        timeout=timeout,
    )
    return SDWebUIProvider(config, session)


def with_payload(request: GenerationRequest, **changes: Any) -> GenerationRequest:
    payload = {**request.compiled.payload, **changes}
    compiled = dataclasses.replace(request.compiled, payload=payload)
    return dataclasses.replace(request, compiled=compiled)


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def failure(
    provider: SDWebUIProvider, request: GenerationRequest, progress: Progress | None = None
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.generate(request, progress or Progress())
    return caught.value


async def assert_polling_stopped(fake: SDWebUIFake) -> None:
    """No poll starts once the call has returned (one already on the wire may still land)."""
    await asyncio.sleep(POLL * 2)
    settled = len(fake.requests)
    await asyncio.sleep(POLL * 5)
    assert len(fake.requests) == settled


def ok_answer(images: list[str], info: object) -> Canned:
    return Canned(200, json.dumps({"images": images, "parameters": {}, "info": info}).encode())


# --- success -------------------------------------------------------------------------------------


async def test_generates_a_png_with_the_seed_and_model_the_webui_used(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    progress = Progress()

    image = await make(fake.base_url, session).generate(request_for, progress)

    picture = opened(image.data)
    assert (picture.format, picture.size) == ("PNG", SIZE)
    assert "Seed: 3" in picture.text["parameters"]  # type: ignore[attr-defined]
    assert image.content_type == "image/png"
    assert image.seed == 3
    assert image.model == "caverna-test-xl"
    assert image.cost_usd == 0.0
    assert image.latency_ms > 0
    assert progress.values == sorted(set(progress.values))
    assert any(0 < v < 1 for v in progress.values)
    assert progress.values[-1] == 1.0


async def test_sends_the_compiled_payload_with_basic_auth_and_polls_progress_meanwhile(
    fake: SDWebUIFake,
    session: aiohttp.ClientSession,
    request_for: GenerationRequest,
    compiled: CompiledPrompt,
) -> None:
    await make(fake.base_url, session).generate(request_for, Progress())

    [txt2img] = fake.requests_to("/sdapi/v1/txt2img", "POST")
    assert txt2img.json == compiled.payload
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert txt2img.headers["Authorization"] == expected
    polls = fake.requests_to("/sdapi/v1/progress", "GET")
    assert polls
    assert all(p.query == {"skip_current_image": "true"} for p in polls)
    assert all(p.headers["Authorization"] == expected for p in polls)
    assert any(0 < answered < 1 for answered in fake.progress_answers)  # seen mid-generation
    await assert_polling_stopped(fake)


async def test_a_random_seed_is_reported_as_the_one_the_webui_drew(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    image = await make(fake.base_url, session).generate(
        with_payload(request_for, seed=-1), Progress()
    )

    assert image.seed is not None
    assert f"Seed: {image.seed}" in opened(image.data).text["parameters"]  # type: ignore[attr-defined]


async def test_a_grid_before_and_extension_images_after_the_result_are_skipped(
    session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    server = SDWebUIFake(duration=0.01, image_size=SIZE, prepend_grid=True, extra_images=2)
    await server.start()
    try:
        provider = make(server.base_url, session, username=None, password=None)
        image = await provider.generate(request_for, Progress())
    finally:
        await server.stop()

    picture = opened(image.data)
    assert picture.size == SIZE  # the grid is twice as wide
    assert "Seed: 3" in picture.text["parameters"]  # type: ignore[attr-defined]


async def test_a_data_url_prefix_and_a_damaged_info_are_tolerated(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    png = render_png(SIZE, 11, "")
    fake.script = [ok_answer(["data:image/png;base64," + base64.b64encode(png).decode()], "{no")]

    image = await make(fake.base_url, session).generate(request_for, Progress())

    assert image.data == png  # passed on exactly as received
    assert image.seed == 3  # the request's fixed seed stands in for the unreadable info
    assert image.model == "sdwebui"


async def test_concurrent_calls_queue_behind_the_webuis_single_job(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    provider = make(fake.base_url, session)

    first, second = await asyncio.gather(
        provider.generate(with_payload(request_for, seed=10), Progress()),
        provider.generate(with_payload(request_for, seed=20), Progress()),
    )

    assert (first.seed, second.seed) == (10, 20)
    assert fake.generated == 2
    assert max(a for a in fake.progress_answers) <= 1.0


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canned", "kind", "retryable", "said"),
    [
        (sampler_not_found(), ErrorKind.INVALID_REQUEST, False, "Sampler not found"),
        (unauthorized(), ErrorKind.AUTH, False, "--api-auth"),
        (api_missing(), ErrorKind.INVALID_REQUEST, False, "--api"),
        (validation_error("steps"), ErrorKind.INVALID_REQUEST, False, "body.steps"),
        (out_of_memory(), ErrorKind.TRANSIENT, True, "out of memory"),
        (server_error(), ErrorKind.TRANSIENT, True, "NaNs"),
        (Canned(503, b"model loading"), ErrorKind.PROVIDER_DOWN, True, "503"),
        (malformed_json(), ErrorKind.BAD_RESPONSE, True, "malformed JSON"),
        (not_an_image(), ErrorKind.BAD_RESPONSE, True, "not an image"),
        (ok_answer(["%%%"], "{}"), ErrorKind.BAD_RESPONSE, True, "base64"),
        (ok_answer([], "{}"), ErrorKind.BAD_RESPONSE, True, "no image"),
    ],
    ids=[
        "sampler",
        "401",
        "404",
        "422",
        "oom",
        "500",
        "503",
        "malformed",
        "not-image",
        "bad-base64",
        "no-images",
    ],
)
async def test_answers_map_to_the_taxonomy(
    fake: SDWebUIFake,
    session: aiohttp.ClientSession,
    request_for: GenerationRequest,
    canned: Canned,
    kind: ErrorKind,
    retryable: bool,
    said: str,
) -> None:
    fake.script = [canned]

    error = await failure(make(fake.base_url, session), request_for)

    assert (error.code, error.retryable) == (kind.value, retryable)
    assert said in error.message


async def test_wrong_credentials_are_refused_by_the_server(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    provider = make(fake.base_url, session, password="not-it")

    error = await failure(provider, request_for)

    assert (error.code, error.retryable) == (ErrorKind.AUTH, False)
    assert fake.generated == 0
    assert await provider.health() is False


async def test_a_user_with_an_empty_password_authenticates(
    session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    server = SDWebUIFake(auth=("artist", ""), duration=0.01, image_size=SIZE)
    await server.start()
    try:
        provider = make(server.base_url, session, username="artist", password=None)
        image = await provider.generate(request_for, Progress())
    finally:
        await server.stop()

    assert image.seed == 3


async def test_a_server_started_without_api_is_explained(
    session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    server = SDWebUIFake(api=False)
    await server.start()
    try:
        error = await failure(make(server.base_url, session), request_for)
    finally:
        await server.stop()

    assert (error.code, error.retryable) == (ErrorKind.INVALID_REQUEST, False)
    assert "start it with --api" in error.message


async def test_an_unknown_sampler_is_refused_by_the_server(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    request = with_payload(request_for, sampler_name="Nonexistent Sampler")

    error = await failure(make(fake.base_url, session), request)

    assert (error.code, error.retryable) == (ErrorKind.INVALID_REQUEST, False)
    assert "Sampler not found" in error.message


async def test_a_body_of_the_wrong_shape_gets_the_validation_detail(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    error = await failure(make(fake.base_url, session), with_payload(request_for, steps="thirty"))

    assert (error.code, error.retryable) == (ErrorKind.INVALID_REQUEST, False)
    assert "body.steps: value is not a valid integer" in error.message


async def test_a_slow_generation_times_out_and_stops_polling(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    fake.script = [Slow(seconds=2.0)]

    error = await failure(make(fake.base_url, session, timeout=0.2), request_for)

    assert (error.code, error.retryable) == (ErrorKind.TIMEOUT, True)
    await assert_polling_stopped(fake)


async def test_connection_refused_means_the_provider_is_down(
    refused_url: str, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    provider = make(refused_url, session)

    error = await failure(provider, request_for)

    assert (error.code, error.retryable) == (ErrorKind.PROVIDER_DOWN, True)
    assert await provider.health() is False


# --- health, configuration, contract -------------------------------------------------------------


async def test_health_is_the_progress_route_answering(
    fake: SDWebUIFake, session: aiohttp.ClientSession
) -> None:
    assert await make(fake.base_url, session).health() is True
    assert fake.requests_to("/sdapi/v1/progress")[0].headers["Authorization"].startswith("Basic ")


async def test_a_prompt_for_another_provider_is_refused_before_any_traffic(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    other = compile_for("midjourney")

    error = await failure(
        make(fake.base_url, session), dataclasses.replace(request_for, compiled=other)
    )

    assert (error.code, error.retryable) == (ErrorKind.INVALID_REQUEST, False)
    assert fake.requests == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"password": "without-a-user"},
        {"progress_interval": 0},
        {"timeout": 0},
        {"base_url": "localhost:7860"},
    ],
)
def test_a_config_that_cannot_work_is_refused(overrides: dict[str, Any]) -> None:
    options: dict[str, Any] = {"base_url": "http://gpu-box:7860", **overrides}
    with pytest.raises(ValueError, match=r"\S"):
        SDWebUIConfig(**options)


# --- the intake bound ----------------------------------------------------------------------


async def test_the_answer_waits_for_intake_room_outside_the_timeout(
    fake: SDWebUIFake, session: aiohttp.ClientSession, request_for: GenerationRequest
) -> None:
    provider = make(fake.base_url, session, timeout=1.0)

    image, _ = await generate_behind_a_full_gate(
        lambda request: provider.generate(request, Progress()), request_for, hold_seconds=1.2
    )

    assert opened(image.data).size == SIZE
