"""Lighting: the side the light comes from, exposure and warmth, on images of known light."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from PIL import Image

from caverna.brand.registry import PackRegistry
from caverna.consistency.lighting import (
    SIDE_THRESHOLD,
    check_lighting,
    direction_score,
    expected_warmth,
    measure_light,
)
from caverna.prompting.engine import PromptEngine
from caverna.providers.preview import draw_preview

ENGINE = PromptEngine(PackRegistry())


def lit_from(side: str, size: int = 200) -> Image.Image:
    """A grey ramp, brightest on `side`."""
    ramp = Image.linear_gradient("L").resize((size, size))  # dark at the top, bright at the bottom
    turned = {
        "bottom": ramp,
        "top": ramp.rotate(180),
        "left": ramp.rotate(-90),
        "right": ramp.rotate(90),
    }[side]
    return turned.convert("RGB")


def preview_lit(frame: str, key_side: str) -> Image.Image:
    compiled = ENGINE.compile({"frame": frame, "seed": 5}, "preview")
    scene: dict[str, Any] = copy.deepcopy(compiled.payload)
    scene["lighting"]["key_side"] = key_side
    return draw_preview(scene, prompt=compiled.prompt)


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_a_ramp_reads_as_lit_from_its_bright_side(side: str) -> None:
    measured = measure_light(lit_from(side))
    assert measured.side == side
    result = check_lighting(measured, side, None)
    assert result.direction_score == 1.0
    assert result.status == "pass"


def test_a_flat_image_has_no_side_and_front_light_expects_none() -> None:
    measured = measure_light(Image.new("RGB", (64, 64), (128, 128, 128)))
    assert measured.side == "centre"
    assert measured.gradient == (0.0, 0.0)
    assert check_lighting(measured, "front", None).direction_score == 1.0
    assert check_lighting(measured, "left", None).direction_score == 0.5


@pytest.mark.parametrize(
    "frame",
    [
        "onboarding/the-invitation",  # character in the centre
        "onboarding/carving-the-goals",  # character on the right third, bright costume
        "onboarding/wall-of-progress",  # character on the left third
    ],
)
def test_preview_light_from_the_left_is_detected_as_from_the_left(frame: str) -> None:
    left = measure_light(preview_lit(frame, "left"))
    right = measure_light(preview_lit(frame, "right"))
    assert left.side == "left"
    assert right.side == "right"
    assert left.gradient[0] < -SIDE_THRESHOLD < SIDE_THRESHOLD < right.gradient[0]
    assert check_lighting(left, "left", None).status == "pass"
    opposite = check_lighting(right, "left", None)
    assert opposite.status == "fail"
    assert opposite.direction_score == 0.0
    assert "light expected from left" in opposite.notes[0]


def test_direction_score_reads_only_the_expected_axis() -> None:
    assert direction_score("left", (-0.5, 0.9)) == 1.0  # a floor gradient does not matter
    assert direction_score("left", (0.5, 0.0)) == 0.0
    assert direction_score("left", (0.05, 0.0)) == 0.5
    assert direction_score("top", (0.0, -0.4)) == 1.0
    assert direction_score("back", (0.4, 0.0)) == 0.5


def test_exposure_outside_the_range_is_a_warning() -> None:
    dark = measure_light(Image.new("RGB", (32, 32), (8, 8, 8)))
    result = check_lighting(dark, None, None)
    assert result.exposure_score == 0.5
    assert result.status == "warn"
    assert "too dark" in result.notes[0]


def test_warm_and_cool_highlights_are_told_apart() -> None:
    warm = Image.new("RGB", (64, 64), (40, 30, 25))
    warm.paste((255, 190, 120), (0, 0, 64, 16))
    cool = Image.new("RGB", (64, 64), (25, 30, 40))
    cool.paste((170, 200, 255), (0, 0, 64, 16))
    assert measure_light(warm).warmth == "warm"
    assert measure_light(cool).warmth == "cool"
    assert expected_warmth(2400) == "warm"
    assert expected_warmth(5000) == "neutral"
    assert expected_warmth(7000) == "cool"
    mismatch = check_lighting(measure_light(cool), None, 2400)
    assert mismatch.warmth_score == 0.0
    assert mismatch.status == "warn"  # warmth alone never fails an image
