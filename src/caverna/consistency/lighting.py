"""Lighting agreement: exposure, the side the light comes from, and warm or cool highlights.

Measured on the luminance of the analysis image (at most ANALYSIS_SIDE pixels a side). The side
comes from the shading gradient: the mean of the small left-right and top-bottom luminance steps
between neighbouring pixels. Steps larger than SHADING_STEP are object edges (a bright costume
against a dark wall) and are left out; what remains is how light falls off across surfaces, which
points at the light whatever stands where in the frame. Front and back light leave no side, so
both read as "centre": the two cannot be told apart from luminance alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageFilter

MeasuredSide = Literal["left", "right", "top", "bottom", "centre"]
Warmth = Literal["warm", "neutral", "cool"]
Status = Literal["pass", "warn", "fail"]

# the gradient is measured at this size, so its thresholds mean the same for every input size
ANALYSIS_SIDE = 128
# neighbour-to-neighbour steps (in 0-255 grey levels, two pixels apart) counted as shading
SHADING_STEP = 8
# mean shading gradient (grey levels per two pixels) below which no side is named
SIDE_THRESHOLD = 0.15
# mean brightness (0-1) outside this range is under- or over-exposed
EXPOSURE_RANGE = (0.08, 0.92)
# (R - B) / (R + B) of the brightest pixels: above WARM_INDEX reads warm, below COOL_INDEX cool
WARM_INDEX = 0.08
COOL_INDEX = -0.02
HIGHLIGHT_SHARE = 0.1
# a frame lit at or below WARM_KELVIN should look warm, at or above COOL_KELVIN cool
WARM_KELVIN = 4000
COOL_KELVIN = 6500
# how much of the lighting score each part carries
DIRECTION_WEIGHT = 0.6
WARMTH_WEIGHT = 0.2
EXPOSURE_WEIGHT = 0.2

# Both kernels give 128 + (next pixel - previous pixel): right minus left, below minus above.
_STEP_X = ImageFilter.Kernel((3, 3), [0, 0, 0, -1, 0, 1, 0, 0, 0], scale=1, offset=128)
_STEP_Y = ImageFilter.Kernel((3, 3), [0, 1, 0, 0, 0, 0, 0, -1, 0], scale=1, offset=128)

_DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "top": (0.0, -1.0),
    "bottom": (0.0, 1.0),
}


@dataclass(frozen=True, slots=True)
class LightMeasurement:
    brightness: float  # mean luminance, 0-1
    dark_share: float  # pixels darker than 5/255
    bright_share: float  # pixels brighter than 250/255
    gradient: tuple[float, float]  # toward the brighter side: x < 0 left, y < 0 top
    side: MeasuredSide
    warmth_index: float
    warmth: Warmth


@dataclass(frozen=True, slots=True)
class LightingResult:
    measured: LightMeasurement
    expected_side: str | None
    expected_warmth: Warmth | None
    direction_score: float | None
    warmth_score: float | None
    exposure_score: float
    score: float
    status: Status
    notes: tuple[str, ...]


def _mean_step(grey: Image.Image, kernel: ImageFilter.Kernel) -> float:
    """Mean of the neighbour steps no larger than SHADING_STEP, over every pixel."""
    histogram = grey.filter(kernel).histogram()
    total = sum(histogram) or 1
    low, high = 128 - SHADING_STEP, 128 + SHADING_STEP
    return sum((v - 128) * histogram[v] for v in range(low, high + 1)) / total


def measure_light(image: Image.Image) -> LightMeasurement:
    """Every lighting figure of an image, on a copy at most ANALYSIS_SIDE pixels a side."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if max(rgb.size) > ANALYSIS_SIDE:
        rgb = rgb.copy()
        rgb.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BOX)
    grey = rgb.convert("L")
    histogram = grey.histogram()
    count = sum(histogram) or 1
    mean = sum(v * n for v, n in enumerate(histogram)) / count
    gradient = (_mean_step(grey, _STEP_X), _mean_step(grey, _STEP_Y))
    index = _warmth_index(rgb, grey, histogram)
    return LightMeasurement(
        brightness=mean / 255,
        dark_share=sum(histogram[:5]) / count,
        bright_share=sum(histogram[251:]) / count,
        gradient=gradient,
        side=_side(gradient),
        warmth_index=index,
        warmth=_warmth(index),
    )


def _side(gradient: tuple[float, float]) -> MeasuredSide:
    gx, gy = gradient
    if math.hypot(gx, gy) < SIDE_THRESHOLD:
        return "centre"
    if abs(gx) >= abs(gy):
        return "left" if gx < 0 else "right"
    return "top" if gy < 0 else "bottom"


def _warmth_index(rgb: Image.Image, grey: Image.Image, histogram: list[int]) -> float:
    """(R - B) / (R + B) over the brightest pixels: the colour of the light, not of the walls."""
    wanted = max(1, round(HIGHLIGHT_SHARE * rgb.width * rgb.height))
    level, seen = 255, 0
    while level > 0 and seen + histogram[level] < wanted:
        seen += histogram[level]
        level -= 1
    mask = grey.point(lambda v: 255 if v >= level else 0)
    red, _, blue = (channel.histogram(mask) for channel in rgb.split())
    total_red = sum(i * n for i, n in enumerate(red))
    total_blue = sum(i * n for i, n in enumerate(blue))
    return (total_red - total_blue) / (total_red + total_blue) if total_red + total_blue else 0.0


def _warmth(index: float) -> Warmth:
    if index > WARM_INDEX:
        return "warm"
    if index < COOL_INDEX:
        return "cool"
    return "neutral"


def expected_warmth(color_temperature_k: int) -> Warmth:
    if color_temperature_k <= WARM_KELVIN:
        return "warm"
    if color_temperature_k >= COOL_KELVIN:
        return "cool"
    return "neutral"


def direction_score(expected_side: str, gradient: tuple[float, float]) -> float:
    """1 when the shading gradient clearly points to the expected side, 0 when it clearly points
    the opposite way, 0.5 when it is too weak to say.

    Only the axis of the expectation counts: floors and skies put a top-bottom gradient in most
    pictures whatever the key light does. Front and back light should leave no left-right
    gradient; a clear one scores 0.5, since a frontal key still throws some light to one side.
    """
    gx, gy = gradient
    if expected_side not in _DIRECTIONS:
        return 1.0 if abs(gx) < SIDE_THRESHOLD else 0.5
    ex, ey = _DIRECTIONS[expected_side]
    along = gx * ex + gy * ey
    if along >= SIDE_THRESHOLD:
        return 1.0
    return 0.0 if along <= -SIDE_THRESHOLD else 0.5


def check_lighting(
    measured: LightMeasurement,
    expected_side: str | None,
    color_temperature_k: int | None,
    exposure_range: tuple[float, float] = EXPOSURE_RANGE,
) -> LightingResult:
    """Compare a measurement with a frame's lighting spec; a part not specified is not scored."""
    notes: list[str] = []
    low, high = exposure_range
    exposure = 1.0 if low <= measured.brightness <= high else 0.5
    if exposure < 1:
        kind = "dark" if measured.brightness < low else "bright"
        notes.append(f"mean brightness {measured.brightness:.2f} is too {kind}")
    d_score = None if expected_side is None else direction_score(expected_side, measured.gradient)
    if d_score is not None and d_score < 1:
        gx, gy = measured.gradient
        notes.append(
            f"light expected from {expected_side}; shading gradient ({gx:+.2f}, {gy:+.2f})"
            f" reads {measured.side}"
        )
    want_warmth = None if color_temperature_k is None else expected_warmth(color_temperature_k)
    w_score: float | None = None
    if want_warmth is not None:
        if want_warmth == measured.warmth:
            w_score = 1.0
        elif "neutral" in (want_warmth, measured.warmth):
            w_score = 0.5
        else:
            w_score = 0.0
        if w_score < 1:
            notes.append(f"highlights read {measured.warmth}, the spec asks for {want_warmth}")
    parts = [(EXPOSURE_WEIGHT, exposure)]
    if d_score is not None:
        parts.append((DIRECTION_WEIGHT, d_score))
    if w_score is not None:
        parts.append((WARMTH_WEIGHT, w_score))
    score = sum(w * s for w, s in parts) / sum(w for w, _ in parts)
    # only the side can fail the check: warmth and exposure are too palette-dependent to be sure
    status: Status = "pass"
    if d_score == 0.0:
        status = "fail"
    elif score < 0.8 or (d_score is not None and d_score < 1):
        status = "warn"
    return LightingResult(
        measured=measured,
        expected_side=expected_side,
        expected_warmth=want_warmth,
        direction_score=d_score,
        warmth_score=w_score,
        exposure_score=exposure,
        score=score,
        status=status,
        notes=tuple(notes),
    )
