"""Palette adherence: an image in the pack's colours scores high, an image in others scores low."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from PIL import Image, ImageDraw

from caverna.brand.registry import PackRegistry
from caverna.consistency.colour import hex_to_rgb
from caverna.consistency.palette import (
    BAD_DELTA_E,
    GOOD_DELTA_E,
    DominantColour,
    dominant_colours,
    match_palette,
    palette_distance,
    palette_score,
)
from caverna.consistency.report import analysis_copy
from caverna.prompting.engine import PromptEngine
from caverna.providers.preview import draw_preview

PACK = PackRegistry().get("capitao-caverna")
CAVE = tuple((c.name, c.hex) for c in PACK.model.foundation.technical.palette)
# saturated, light colours the cave palette has nothing like
CANDY = (
    ("pink", "#FF5DA2"),
    ("cyan", "#22D3EE"),
    ("lime", "#A3E635"),
    ("violet", "#A855F7"),
    ("lemon", "#FDE047"),
)
COOL = (
    ("navy", "#1B2A4A"),
    ("teal", "#1F7A8C"),
    ("sky", "#8FD3F4"),
    ("mint", "#7FD8BE"),
    ("violet", "#5B4B9A"),
    ("ice", "#E6F4F1"),
)


def stripes(palette: tuple[tuple[str, str], ...], size: int = 240) -> Image.Image:
    """Vertical bands of the palette's colours, equal widths."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    band = size / len(palette)
    for index, (_, hex_) in enumerate(palette):
        draw.rectangle(
            (round(index * band), 0, round((index + 1) * band) - 1, size), fill=hex_to_rgb(hex_)
        )
    return image


def preview(palette: tuple[tuple[str, str], ...], frame: str, kelvin: int = 6500) -> Image.Image:
    """A preview render of a storyboard frame drawn with `palette` under a neutral light."""
    compiled = PromptEngine(PackRegistry()).compile({"frame": frame, "seed": 5}, "preview")
    scene: dict[str, Any] = copy.deepcopy(compiled.payload)
    scene["palette"] = [{"name": n, "hex": h, "role": "test"} for n, h in palette]
    scene["lighting"]["color_temperature_k"] = kelvin
    return draw_preview(scene, prompt=compiled.prompt)


def test_dominant_colours_of_flat_bands_are_those_colours_with_their_shares() -> None:
    image = Image.new("RGB", (100, 100), (200, 30, 30))
    ImageDraw.Draw(image).rectangle((0, 0, 24, 99), fill=(30, 30, 200))
    found = dominant_colours(image)
    assert [(c.rgb, round(c.weight, 2)) for c in found] == [
        ((200, 30, 30), 0.75),
        ((30, 30, 200), 0.25),
    ]


def test_an_image_made_of_the_palette_scores_one_and_one_made_of_another_scores_low() -> None:
    six = CAVE[:6]  # fewer colours than the quantizer keeps, so each survives as it is
    own = match_palette(dominant_colours(stripes(six)), CAVE)
    assert own.mean_delta_e < 0.5
    assert own.score == 1.0
    assert set(own.used) == {name for name, _ in six}
    assert set(own.unused) == {name for name, _ in CAVE[6:]}

    other = match_palette(dominant_colours(stripes(CANDY)), CAVE)
    assert other.mean_delta_e > 20
    assert other.score < 0.2


@pytest.mark.parametrize(
    "frame", ["onboarding/the-invitation", "onboarding/carving-the-goals", "onboarding/training"]
)
def test_preview_render_scores_high_on_its_palette_and_low_on_a_wrong_one(frame: str) -> None:
    dominant = dominant_colours(analysis_copy(preview(CAVE, frame)))
    right = match_palette(dominant, CAVE)
    assert right.score >= 0.6, right.mean_delta_e
    for wrong in (CANDY, COOL):
        result = match_palette(dominant, wrong)
        assert result.score <= 0.35, result.mean_delta_e
        assert result.mean_delta_e > right.mean_delta_e + 8


def test_a_saturated_render_is_far_from_the_cave_palette() -> None:
    dominant = dominant_colours(analysis_copy(preview(CANDY, "onboarding/the-invitation")))
    assert match_palette(dominant, CANDY).score > match_palette(dominant, CAVE).score


def test_score_mapping_is_linear_between_the_documented_bounds() -> None:
    assert palette_score(0.0) == 1.0
    assert palette_score(GOOD_DELTA_E) == 1.0
    assert palette_score((GOOD_DELTA_E + BAD_DELTA_E) / 2) == pytest.approx(0.5)
    assert palette_score(BAD_DELTA_E) == 0.0
    assert palette_score(100.0) == 0.0


def test_palette_distance_is_symmetric_and_zero_for_the_same_palette() -> None:
    first = [DominantColour((200, 30, 30), 0.6), DominantColour((20, 20, 20), 0.4)]
    second = [DominantColour((30, 160, 200), 1.0)]
    assert palette_distance(first, first) == 0.0
    assert palette_distance(first, second) == pytest.approx(palette_distance(second, first))
    assert palette_distance(first, second) > 20


def test_empty_inputs_are_rejected_with_a_reason() -> None:
    with pytest.raises(ValueError, match="at least one colour"):
        match_palette([DominantColour((1, 2, 3), 1.0)], ())
    with pytest.raises(ValueError, match="no dominant colours"):
        match_palette([], CAVE)
