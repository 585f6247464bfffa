"""Palette adherence: the image's dominant colours against the pack's palette, in CIEDE2000.

The dominant colours come from Pillow's median-cut quantizer on the downscaled analysis image,
each with the share of pixels it stands for. Every dominant colour is matched to its nearest pack
colour; the weighted mean of those distances is the measurement, and the score maps it to 0-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from caverna.consistency.colour import RGB, ciede2000, hex_to_rgb, rgb_to_hex, srgb_to_lab

DOMINANT_COLOURS = 8
# Mean ΔE00 at or below GOOD scores 1; at or above BAD scores 0; linear in between. ΔE00 of about
# 2 is a visible difference side by side; lit, shaded and antialiased renders of a palette sit
# around 5-12 from its swatches, an unrelated palette 20 or more.
GOOD_DELTA_E = 8.0
BAD_DELTA_E = 26.0
PASS_SCORE = 0.6
WARN_SCORE = 0.35
# a pack colour counts as used when dominant colours covering this share of pixels match it
USED_SHARE = 0.03


@dataclass(frozen=True, slots=True)
class DominantColour:
    rgb: RGB
    weight: float  # share of the analysed pixels, 0-1; a palette's weights add up to 1

    @property
    def hex(self) -> str:
        return rgb_to_hex(self.rgb)


@dataclass(frozen=True, slots=True)
class PaletteMatch:
    colour: DominantColour
    nearest: str  # the pack colour's name
    delta_e: float


@dataclass(frozen=True, slots=True)
class PaletteResult:
    matches: tuple[PaletteMatch, ...]
    mean_delta_e: float
    score: float
    used: tuple[str, ...]  # pack colours that a noticeable share of the image is close to
    unused: tuple[str, ...]


def dominant_colours(image: Image.Image, count: int = DOMINANT_COLOURS) -> list[DominantColour]:
    """Up to `count` colours with their pixel shares, largest share first.

    Median cut splits the colour cube where the pixels are, so a small but saturated accent
    (a torch flame) keeps a colour of its own instead of being averaged into the background.
    """
    if count < 1:
        raise ValueError("at least one dominant colour is needed")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    quantized = rgb.quantize(
        colors=count, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    flat = quantized.getpalette() or []
    counts = quantized.getcolors(maxcolors=256) or []
    total = sum(n for n, _ in counts) or 1
    colours = [
        DominantColour((flat[3 * index], flat[3 * index + 1], flat[3 * index + 2]), n / total)
        for n, index in counts
        if isinstance(index, int)
    ]
    return sorted(colours, key=lambda c: (-c.weight, c.rgb))


def palette_score(mean_delta_e: float) -> float:
    """The documented mapping from mean ΔE00 to 0-1 (see GOOD_DELTA_E and BAD_DELTA_E)."""
    if mean_delta_e <= GOOD_DELTA_E:
        return 1.0
    if mean_delta_e >= BAD_DELTA_E:
        return 0.0
    return 1.0 - (mean_delta_e - GOOD_DELTA_E) / (BAD_DELTA_E - GOOD_DELTA_E)


def match_palette(
    dominant: Sequence[DominantColour], palette: Sequence[tuple[str, str]]
) -> PaletteResult:
    """Match each dominant colour to the nearest of `palette` ((name, "#RRGGBB") pairs)."""
    if not palette:
        raise ValueError("a palette to match against needs at least one colour")
    if not dominant:
        raise ValueError("no dominant colours to match")
    swatches = [(name, srgb_to_lab(hex_to_rgb(hex_))) for name, hex_ in palette]
    matches: list[PaletteMatch] = []
    share: dict[str, float] = {name: 0.0 for name, _ in palette}
    for colour in dominant:
        lab = srgb_to_lab(colour.rgb)
        distance, name = min((ciede2000(lab, swatch), name) for name, swatch in swatches)
        matches.append(PaletteMatch(colour, name, distance))
        share[name] += colour.weight
    total = sum(c.weight for c in dominant) or 1.0
    mean = sum(m.delta_e * m.colour.weight for m in matches) / total
    used = tuple(name for name, _ in palette if share[name] >= USED_SHARE)
    unused = tuple(name for name, _ in palette if share[name] < USED_SHARE)
    return PaletteResult(tuple(matches), mean, palette_score(mean), used, unused)


def palette_distance(first: Sequence[DominantColour], second: Sequence[DominantColour]) -> float:
    """Symmetric weighted mean ΔE00 between two dominant palettes (for frame-to-frame drift).

    Each colour of one palette is matched to its nearest in the other, weighted by its share,
    both ways, and the two means averaged: a colour that appears in only one frame counts.
    """
    if not first or not second:
        raise ValueError("both palettes need at least one colour")

    def one_way(source: Sequence[DominantColour], target: Sequence[DominantColour]) -> float:
        labs = [srgb_to_lab(c.rgb) for c in target]
        total = sum(c.weight for c in source) or 1.0
        return (
            sum(c.weight * min(ciede2000(srgb_to_lab(c.rgb), t) for t in labs) for c in source)
            / total
        )

    return (one_way(first, second) + one_way(second, first)) / 2
