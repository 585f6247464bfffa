"""The offline preview provider: a readable placeholder drawn from the scene, with no model at all.

It lets art directors check composition (placement, facing, light side, text space, props) and
lets the whole pipeline run without network or credentials. Output is a pure function of the scene
and prompt, byte for byte, so previews can be cached, diffed and used in golden tests.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
import unicodedata
import zlib
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from caverna.imaging import CONTENT_TYPES, DeliveryFormat, encode_image
from caverna.providers.base import (
    GenerationRequest,
    ProgressCallback,
    ProviderError,
    ProviderImage,
    require_dialect,
)

NAME = "preview"
MODEL = "caverna-preview-1"
MAX_SIDE = 4096

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]

SKIN: RGB = (184, 132, 96)
HAIR: RGB = (70, 50, 38)
EYES: RGB = (28, 24, 22)
NEUTRAL_OUTFIT: RGB = (150, 146, 138)
NEUTRAL_FOOTWEAR: RGB = (96, 84, 72)
FALLBACK_DARK: RGB = (28, 31, 38)
FALLBACK_MID: RGB = (96, 100, 110)
FALLBACK_AMBER: RGB = (242, 165, 65)
FALLBACK_ORANGE: RGB = (212, 87, 42)
SUPERSAMPLE = 2  # ImageDraw does not antialias; drawing at 2x and box-reducing does.

_FACING_DIRECTION = {
    "left": -1,
    "three-quarter-left": -1,
    "right": 1,
    "three-quarter-right": 1,
    "viewer": 0,
    "away": 0,
}
_PLACEMENT_X = {"left-third": 1 / 3, "center": 1 / 2, "right-third": 2 / 3}


# --- colour ------------------------------------------------------------------------------------


def hex_rgb(value: object, fallback: RGB) -> RGB:
    if not isinstance(value, str):
        return fallback
    text = value.strip().lstrip("#")
    if len(text) == 3:
        text = "".join(ch * 2 for ch in text)
    try:
        number = int(text, 16)
    except ValueError:
        return fallback
    if len(text) != 6:
        return fallback
    return (number >> 16) & 0xFF, (number >> 8) & 0xFF, number & 0xFF


def luminance(color: RGB) -> float:
    return (0.2126 * color[0] + 0.7152 * color[1] + 0.0722 * color[2]) / 255


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def kelvin_rgb(kelvin: float) -> RGB:
    """Tanner Helland's fit of blackbody colour, good to a few percent over 1000-40000 K."""
    t = min(max(kelvin, 1000.0), 40000.0) / 100

    def clamp(value: float) -> int:
        return round(min(max(value, 0.0), 255.0))

    if t <= 66:
        red = 255.0
        green = 99.4708025861 * math.log(t) - 161.1195681661
    else:
        red = 329.698727446 * (t - 60) ** -0.1332047592
        green = 288.1221695283 * (t - 60) ** -0.0755148492
    if t >= 66:
        blue = 255.0
    elif t <= 19:
        blue = 0.0
    else:
        blue = 138.5177312231 * math.log(t - 10) - 305.0447927307
    return clamp(red), clamp(green), clamp(blue)


def tinted(color: RGB, light: RGB, strength: float) -> RGB:
    """`color` as lit by `light`: a per-channel multiply, blended in by `strength`."""
    return (
        round(color[0] * (1 - strength + strength * light[0] / 255)),
        round(color[1] * (1 - strength + strength * light[1] / 255)),
        round(color[2] * (1 - strength + strength * light[2] / 255)),
    )


def _stable_color(text: str) -> RGB:
    """A colour picked from the text itself, so a prop without one looks the same every time."""
    crc = zlib.crc32(text.encode("utf-8"))
    return 90 + crc % 140, 90 + (crc >> 8) % 140, 90 + (crc >> 16) % 140


# --- scene ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Palette:
    colors: tuple[RGB, ...]
    dark: RGB
    mid: RGB
    amber: RGB
    orange: RGB


def _palette(scene: dict[str, Any]) -> _Palette:
    entries = [e for e in scene.get("palette") or [] if isinstance(e, dict)]
    named = [(str(e.get("name", "")), hex_rgb(e.get("hex"), FALLBACK_MID)) for e in entries]
    colors = tuple(color for _, color in named)
    if not colors:
        return _Palette((), FALLBACK_DARK, FALLBACK_MID, FALLBACK_AMBER, FALLBACK_ORANGE)
    dark = min(colors, key=luminance)
    mean: RGB = (
        round(sum(c[0] for c in colors) / len(colors)),
        round(sum(c[1] for c in colors) / len(colors)),
        round(sum(c[2] for c in colors) / len(colors)),
    )

    def by_name(word: str, fallback: RGB) -> RGB:
        return next((color for name, color in named if word in name.lower()), fallback)

    return _Palette(
        colors=colors,
        dark=dark,
        # Most of the way from the darkest swatch toward the palette's average: a mid tone that
        # belongs to the brand without any single accent colour dominating the backdrop.
        mid=mix(dark, mean, 0.6),
        amber=by_name("amber", colors[0]),
        orange=by_name("orange", colors[1] if len(colors) > 1 else FALLBACK_ORANGE),
    )


def _size(scene: dict[str, Any]) -> tuple[int, int]:
    width, height = scene["width"], scene["height"]
    if not isinstance(width, int) or not isinstance(height, int):
        raise TypeError("scene width and height must be integers")
    if not (16 <= width <= MAX_SIDE and 16 <= height <= MAX_SIDE):
        raise ValueError(f"scene size {width}x{height} is outside 16..{MAX_SIDE}")
    return width, height


def _printable(text: str) -> str:
    """Plain ASCII for the built-in font, which has no accented glyphs: "Capitão" -> "Capitao"."""
    decomposed = unicodedata.normalize("NFKD", text)
    chars = []
    for ch in decomposed:
        if unicodedata.combining(ch):
            continue
        if ch in "\u2013\u2014":
            chars.append("-")
        elif ch.isspace():
            chars.append(" ")
        elif 32 <= ord(ch) < 127 or ch == "\u00b7":
            chars.append(ch)
        else:
            chars.append("?")
    return "".join(chars)


# --- drawing -------------------------------------------------------------------------------------


def render_preview(scene: dict[str, Any], *, prompt: str, delivery: DeliveryFormat) -> bytes:
    """The scene drawn as a placeholder and encoded in `delivery`; same inputs, same bytes."""
    return encode_image(draw_preview(scene, prompt=prompt), delivery)


def draw_preview(scene: dict[str, Any], *, prompt: str) -> Image.Image:
    """The placeholder as an RGB image at the scene's size (render_preview without encoding)."""
    width, height = _size(scene)
    palette = _palette(scene)
    lighting = scene.get("lighting") or {}
    light = kelvin_rgb(float(lighting.get("color_temperature_k") or 5500))
    text_side = str(scene.get("text_space") or "none")
    labels_at_top = text_side != "top"

    font_size = max(11, round(min(width, height) / 38))
    label_lines = _label_lines(scene)
    strip = _labels_height(font_size, len(label_lines))
    swatch = _swatch_height(height)
    figure = _figure_box(scene, width, height, text_side, labels_at_top, strip, swatch)

    image = _background(width, height, palette, light)
    _glow(image, str(lighting.get("key_side") or "left"), light, figure)
    _cave_marks(image, int(scene.get("seed") or 0), palette)
    _character(image, scene, figure, palette)
    draw = ImageDraw.Draw(image, "RGBA")
    _text_band(draw, text_side, width, height, font_size)
    _labels(draw, label_lines, prompt, width, height, font_size, strip, labels_at_top)
    _palette_strip(draw, palette, width, height, swatch)
    return image


def _swatch_height(height: int) -> int:
    return max(6, round(height / 64))


def _background(width: int, height: int, palette: _Palette, light: RGB) -> Image.Image:
    """Darkest swatch at the top, the mid tone at the floor, both lit by the key light."""
    top = tinted(palette.dark, light, 0.45)
    bottom = tinted(palette.mid, light, 0.45)
    steps = max(height - 1, 1)
    column = b"".join(bytes(mix(top, bottom, y / steps)) for y in range(height))
    return Image.frombytes("RGB", (1, height), column).resize(
        (width, height), Image.Resampling.NEAREST
    )


@dataclass(frozen=True)
class _Figure:
    """Where the character stands: its vertical axis, top of head, soles, and head height."""

    cx: int
    top: float
    bottom: float
    head: float


def _figure_box(
    scene: dict[str, Any],
    width: int,
    height: int,
    text_side: str,
    labels_at_top: bool,
    strip: int,
    swatch: int,
) -> _Figure:
    """Centre the figure in the space the labels and text band leave free.

    A figure too tall for that space overlaps the text band rather than hiding its head under
    the labels: a clash with the copy area is exactly what a preview should show.
    """
    character = scene.get("character") or {}
    fraction = min(max(float(character.get("height_fraction") or 0.7), 0.05), 1.0)
    head_heights = min(max(float(character.get("head_heights") or 6.0), 1.0), 12.0)
    total = fraction * height
    margin = height * 0.02
    free_top = (strip if labels_at_top else 0) + margin
    free_bottom = height - swatch - (0 if labels_at_top else strip) - margin
    if text_side == "top":
        free_top = max(free_top, height / 3)
    elif text_side == "bottom":
        free_bottom = min(free_bottom, height - height / 3)
    top = max((free_top + free_bottom - total) / 2, free_top)
    top = max(min(top, height - swatch - total), 0.0)
    cx = round(width * _PLACEMENT_X.get(str(character.get("placement")), 0.5))
    return _Figure(cx=cx, top=top, bottom=top + total, head=total / head_heights)


def _glow(image: Image.Image, key_side: str, light: RGB, figure: _Figure) -> None:
    """A soft pool of the key light's colour on its side of the frame (behind him when backlit)."""
    width, height = image.size
    glow = mix(light, (255, 255, 255), 0.25)
    middle = (figure.top + figure.bottom) / 2
    span = figure.bottom - figure.top
    placements: dict[str, tuple[tuple[float, float], tuple[float, float], float]] = {
        "left": ((0, height * 0.38), (width * 0.95, height * 0.6), 0.55),
        "right": ((width, height * 0.38), (width * 0.95, height * 0.6), 0.55),
        "top": ((width / 2, 0), (width * 0.9, height * 0.55), 0.5),
        "front": ((figure.cx, middle), (width * 0.85, height * 0.5), 0.35),
        "back": ((figure.cx, middle), (span * 0.55, span * 0.62), 0.7),
    }
    (gx, gy), (rx, ry), strength = placements.get(key_side, placements["left"])
    # Only the visible part of the glow is resampled: cost follows the frame, not the glow size.
    x0, y0 = max(0, math.floor(gx - rx)), max(0, math.floor(gy - ry))
    x1, y1 = min(width, math.ceil(gx + rx)), min(height, math.ceil(gy + ry))
    if x1 - x0 < 1 or y1 - y0 < 1 or rx < 1 or ry < 1:
        return
    table = [round(strength * 255 * (1 - v / 255) ** 2) for v in range(256)]
    falloff = Image.radial_gradient("L").point(table)

    def source(value: float, centre: float, radius: float) -> float:
        return min(max(128 + (value - centre) * 128 / radius, 0.0), 256.0)

    box = (source(x0, gx, rx), source(y0, gy, ry), source(x1, gx, rx), source(y1, gy, ry))
    mask = falloff.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=box)
    image.paste(glow, (x0, y0, x1, y1), mask)


def _cave_marks(image: Image.Image, seed: int, palette: _Palette) -> None:
    """Faint dots, rings and strokes placed by the seed: two seeds never look identical."""
    width, height = image.size
    rng = random.Random(seed)
    draw = ImageDraw.Draw(image, "RGBA")
    unit = min(width, height) / 60
    color = (*palette.amber, 34)
    for _ in range(14):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        size = unit * rng.uniform(0.6, 1.8)
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x - size, y - size, x + size, y + size), fill=color)
        elif kind == 1:
            draw.ellipse((x - size, y - size, x + size, y + size), outline=color, width=2)
        else:
            angle = rng.uniform(0, math.pi)
            dx, dy = math.cos(angle) * size * 2.5, math.sin(angle) * size * 2.5
            draw.line((x - dx, y - dy, x + dx, y + dy), fill=color, width=max(2, round(size / 2)))


def _darker(color: RGB, amount: float) -> RGB:
    return mix(color, (0, 0, 0), amount)


Point = tuple[float, float]


class _Painter:
    """Draws in figure space: u is across (positive = the way he faces), v down from his head top.

    Drawing happens on a 2x copy of the background under the figure, which is then box-reduced
    back in place: antialiased edges against the real backdrop, at the cost of one small crop.
    """

    def __init__(self, draw: ImageDraw.ImageDraw, origin: Point, flip: int) -> None:
        self.draw = draw
        self.origin = origin
        self.flip = flip

    def at(self, u: float, v: float) -> Point:
        return (
            (self.origin[0] + self.flip * u) * SUPERSAMPLE,
            (self.origin[1] + v) * SUPERSAMPLE,
        )

    def box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self.at(u0, v0), self.at(u1, v1)
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    def ellipse(self, u: float, v: float, rx: float, ry: float, fill: RGB | RGBA) -> None:
        self.draw.ellipse(self.box(u - rx, v - ry, u + rx, v + ry), fill=fill)

    def disc(self, u: float, v: float, r: float, fill: RGB, outline: RGB | None = None) -> None:
        width = max(2, round(r * SUPERSAMPLE / 7)) if outline else 0
        self.draw.ellipse(
            self.box(u - r, v - r, u + r, v + r), fill=fill, outline=outline, width=width
        )

    def rounded(self, u0: float, v0: float, u1: float, v1: float, radius: float, fill: RGB) -> None:
        self.draw.rounded_rectangle(
            self.box(u0, v0, u1, v1), radius=radius * SUPERSAMPLE, fill=fill
        )

    def polygon(self, points: Sequence[Point], fill: RGB) -> None:
        self.draw.polygon([self.at(u, v) for u, v in points], fill=fill)

    def capsule(self, start: Point, end: Point, thickness: float, fill: RGB) -> None:
        self.draw.line(
            (*self.at(*start), *self.at(*end)), fill=fill, width=round(thickness * SUPERSAMPLE)
        )
        for u, v in (start, end):
            self.disc(u, v, thickness / 2, fill)

    def arc(
        self, u: float, v: float, r: float, start: float, end: float, fill: RGB, width: float
    ) -> None:
        box = self.box(u - r, v - r, u + r, v + r)
        if self.flip < 0:
            start, end = 180 - end, 180 - start
        self.draw.arc(box, start, end, fill=fill, width=max(1, round(width * SUPERSAMPLE)))


def _character(
    image: Image.Image, scene: dict[str, Any], figure: _Figure, palette: _Palette
) -> None:
    character = scene.get("character") or {}
    facing = str(character.get("facing") or "viewer")
    direction = _FACING_DIRECTION.get(facing, 0)
    h = figure.head
    reach = 2.9 * h
    x0 = max(0, math.floor(figure.cx - reach))
    x1 = min(image.width, math.ceil(figure.cx + reach))
    y0 = max(0, math.floor(figure.top - 0.05 * h))
    y1 = min(image.height, math.ceil(figure.bottom + 0.2 * h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    region = image.crop((x0, y0, x1, y1))
    canvas = region.resize(
        (region.width * SUPERSAMPLE, region.height * SUPERSAMPLE), Image.Resampling.NEAREST
    )
    draw = ImageDraw.Draw(canvas, "RGBA")
    origin = (figure.cx - x0, figure.top - y0)
    flip = -1 if direction < 0 else 1
    # Set-down props go toward the middle of the frame, where there is room to see them.
    toward_middle = 1 if figure.cx < image.width / 2 else -1
    body = _Painter(draw, origin, flip)
    hands = _body(body, scene, figure, facing, direction)
    _signature(_Painter(draw, origin, 1), facing, h, palette)
    _props(body, scene, h, figure.bottom - figure.top, hands, toward_middle * flip)
    image.paste(canvas.reduce(SUPERSAMPLE), (x0, y0))


def _body(
    p: _Painter,
    scene: dict[str, Any],
    figure: _Figure,
    facing: str,
    direction: int,
) -> tuple[Point, Point]:
    """The figure as drawn facing right (u > 0) or the viewer; the painter mirrors it for left.

    Returns where the lead and back hands ended up, for the props.
    """
    h = figure.head
    total = figure.bottom - figure.top
    turned = abs(direction)
    profile = facing in ("left", "right")
    outfit = hex_rgb((scene.get("outfit") or {}).get("color"), NEUTRAL_OUTFIT)
    footwear = hex_rgb((scene.get("footwear") or {}).get("color"), NEUTRAL_FOOTWEAR)
    trousers = _darker(outfit, 0.55)

    shoulder_half = 0.95 * h
    torso_top = 0.92 * h
    hip = torso_top + 0.5 * (total - h)
    hem = hip + 0.45 * h
    foot = 0.28 * h
    arm = 0.36 * h
    lead_shoulder = (shoulder_half - arm / 2, torso_top + arm / 2)
    back_shoulder = (-shoulder_half + arm / 2, torso_top + arm / 2)
    lead_hand, back_hand = _hand_positions(scene, h, torso_top, hip, turned)

    p.ellipse(0, total - 0.03 * h, 1.35 * h, 0.16 * h, (0, 0, 0, 70))  # floor shadow

    def limb(shoulder: Point, hand: Point) -> None:
        p.capsule(shoulder, hand, arm, SKIN)
        elbow = (
            shoulder[0] + (hand[0] - shoulder[0]) * 0.42,
            shoulder[1] + (hand[1] - shoulder[1]) * 0.42,
        )
        p.capsule(shoulder, elbow, arm * 1.12, outfit)
        p.disc(*hand, 0.2 * h, SKIN)

    if turned:  # the far arm is partly hidden by the body; a frontal figure shows both in full
        limb(back_shoulder, back_hand)
    leg = 0.55 * h
    for side in (-1, 1):
        inner = side * 0.06 * h
        outer = inner + side * leg
        p.rounded(
            min(inner, outer),
            hip - 0.2 * h,
            max(inner, outer),
            total - foot * 0.6,
            leg / 2.5,
            trousers,
        )
        toe = 0.22 * h * turned
        mid = (inner + outer) / 2
        p.rounded(mid - 0.3 * h, total - foot, mid + 0.3 * h + toe, total, foot / 2, footwear)
    p.rounded(-shoulder_half, torso_top, shoulder_half, hip + 0.1 * h, 0.38 * h, outfit)
    p.polygon(
        [(-0.8 * h, hip - 0.1 * h), (0.8 * h, hip - 0.1 * h), (0.9 * h, hem), (-0.9 * h, hem)],
        outfit,
    )
    p.rounded(-0.86 * h, hip - 0.16 * h, 0.86 * h, hip, 0.04 * h, _darker(outfit, 0.35))  # belt

    head_u = (0.2 if profile else 0.1) * turned * h
    head_v = h / 2
    if facing == "away":
        p.disc(head_u, head_v, h / 2, HAIR)
    else:
        p.disc(head_u, head_v, h / 2, SKIN)
        p.draw.chord(p.box(head_u - h / 2, 0, head_u + h / 2, h * 0.6), 180, 360, fill=HAIR)
        gaze = head_u + 0.1 * turned * h
        eyes = [head_u + 0.32 * h] if profile else [gaze - 0.17 * h, gaze + 0.17 * h]
        for eye in eyes:
            p.disc(eye, head_v + 0.02 * h, 0.07 * h, EYES)
        mouth_u = head_u + 0.3 * h if profile else gaze
        p.arc(mouth_u, head_v + 0.12 * h, 0.12 * h, 30, 150, _darker(SKIN, 0.45), 0.03 * h)
        if profile:
            p.disc(head_u + h / 2, head_v + 0.08 * h, 0.1 * h, SKIN)  # nose
    if not turned:
        limb(back_shoulder, back_hand)
    limb(lead_shoulder, lead_hand)
    return lead_hand, back_hand


def _hand_positions(
    scene: dict[str, Any], h: float, torso_top: float, hip: float, turned: int
) -> tuple[Point, Point]:
    """Both hands meet in front for a two-handed prop; a turned figure reaches forward."""
    props = [prop for prop in scene.get("props") or [] if isinstance(prop, dict)]
    if any(int(prop.get("hands") or 0) >= 2 for prop in props):
        together = (0.25 * turned * h, torso_top + 1.05 * h)
        return together, together
    back = (-1.0 * h, hip + 0.15 * h)
    lead = (1.7 * h, torso_top + 1.3 * h) if turned else (1.0 * h, hip + 0.15 * h)
    return lead, back


def _props(
    p: _Painter,
    scene: dict[str, Any],
    h: float,
    total: float,
    hands: tuple[Point, Point],
    ground_side: int,
) -> None:
    """Held props as circles in the hands (lead hand first); worn or set-down ones by the feet."""
    free = list(hands)
    ground = 0
    for prop in (item for item in scene.get("props") or [] if isinstance(item, dict)):
        color = hex_rgb(prop.get("color"), _stable_color(str(prop.get("id", ""))))
        needed = int(prop.get("hands") or 0)
        if needed >= 2 and len(free) == 2:
            (u, v), r = free[0], 0.42 * h
            free = []
        elif needed == 1 and free:
            (u, v), r = free.pop(0), 0.3 * h
        else:
            r = 0.28 * h
            u, v = ground_side * (1.45 + 0.7 * ground) * h, total - r
            ground += 1
        p.disc(u, v, r, color, outline=_darker(color, 0.45))


def _signature(p: _Painter, facing: str, h: float, palette: _Palette) -> None:
    """Mantle and medallion. The mantle rides his own left shoulder, so unlike the body it is not
    mirrored: image right when he faces the viewer or turns three-quarters, left from behind."""
    side = -1.0 if facing == "away" else 0.0 if facing in ("left", "right") else 1.0
    su = side * 0.65 * h
    top = 0.84 * h
    p.polygon(
        [
            (su - 0.55 * h, top + 0.12 * h),
            (su + 0.2 * h, top - 0.04 * h),
            (su + 0.62 * h, top + 0.2 * h),
            (su + 0.5 * h, top + 0.62 * h),
            (su - 0.1 * h, top + 0.5 * h),
        ],
        palette.orange,
    )
    if facing != "away":
        cord = _darker(palette.dark, 0.1)
        p.disc(0, 0.92 * h + 0.62 * h, 0.21 * h, cord)
        p.disc(0, 0.92 * h + 0.62 * h, 0.16 * h, palette.amber)


def _text_band(
    draw: ImageDraw.ImageDraw, side: str, width: int, height: int, font_size: int
) -> None:
    """Where the app will set its copy: a light veil with a dashed edge and a caption."""
    if side == "top":
        box = (0, 0, width, height // 3)
    elif side == "bottom":
        box = (0, height - height // 3, width, height)
    elif side == "left":
        box = (0, 0, width // 3, height)
    elif side == "right":
        box = (width - width // 3, 0, width, height)
    else:
        return
    draw.rectangle(box, fill=(255, 255, 255, 38))
    edge = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}[side]
    dash = max(6, font_size // 2)
    x0, y0, x1, y1 = box
    line = (255, 255, 255, 110)
    thickness = max(1, font_size // 10)
    if edge in ("top", "bottom"):
        y = y0 if edge == "top" else y1 - 1
        for x in range(0, width, dash * 2):
            draw.line((x, y, min(x + dash, width), y), fill=line, width=thickness)
    else:
        x = x0 if edge == "left" else x1 - 1
        for y in range(0, height, dash * 2):
            draw.line((x, y, x, min(y + dash, height)), fill=line, width=thickness)
    font = ImageFont.load_default(size=font_size)
    draw.text(
        ((x0 + x1) / 2, (y0 + y1) / 2),
        "TEXT SPACE",
        font=font,
        fill=(255, 255, 255, 150),
        anchor="mm",
    )


def _label_lines(scene: dict[str, Any]) -> list[str]:
    def ident(key: str) -> str:
        value = scene.get(key)
        return str(value.get("id")) if isinstance(value, dict) else "-"

    props = [str(p.get("id")) for p in scene.get("props") or [] if isinstance(p, dict)]
    frame = scene.get("frame") or "no frame"
    return [
        _printable(f"PREVIEW · {frame} · seed {scene.get('seed')}"),
        _printable(f"pose {ident('pose')} · outfit {ident('outfit')}"),
        _printable(f"footwear {ident('footwear')} · props {', '.join(props) if props else 'none'}"),
    ]


def _labels_height(font_size: int, lines: int) -> int:
    line = round(font_size * 1.3)
    prompt_line = round(font_size * 0.8 * 1.3)
    return round(font_size * 0.6) * 2 + line * lines + prompt_line * 2


def _wrap(
    text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float, lines: int
) -> list[str]:
    words = text.split()
    out: list[str] = []
    current = ""
    for word in words:
        trial = f"{current} {word}".strip()
        if font.getlength(trial) <= width or not current:
            current = trial
            continue
        out.append(current)
        current = word
        if len(out) == lines:
            break
    if len(out) < lines and current:
        out.append(current)
    if len(out) == lines and " ".join(out) != " ".join(words):
        last = out[-1]
        while last and font.getlength(last + "...") > width:
            last = last[:-1]
        out[-1] = last.rstrip() + "..."
    return out


def _labels(
    draw: ImageDraw.ImageDraw,
    lines: Sequence[str],
    prompt: str,
    width: int,
    height: int,
    font_size: int,
    strip_height: int,
    at_top: bool,
) -> None:
    swatch = _swatch_height(height)
    y0 = 0 if at_top else height - swatch - strip_height
    draw.rectangle((0, y0, width, y0 + strip_height), fill=(10, 10, 14, 150))
    pad = round(font_size * 0.6)
    font = ImageFont.load_default(size=font_size)
    small = ImageFont.load_default(size=max(9, round(font_size * 0.8)))
    y = y0 + pad
    for line in lines:
        draw.text((pad, y), line, font=font, fill=(246, 240, 228, 255))
        y += round(font_size * 1.3)
    for line in _wrap(_printable(prompt), small, width - 2 * pad, 2):
        draw.text((pad, y), line, font=small, fill=(246, 240, 228, 170))
        y += round(font_size * 0.8 * 1.3)


def _palette_strip(
    draw: ImageDraw.ImageDraw, palette: _Palette, width: int, height: int, swatch: int
) -> None:
    colors = palette.colors or (palette.dark, palette.mid)
    count = len(colors)
    for index, color in enumerate(colors):
        x0 = round(index * width / count)
        x1 = round((index + 1) * width / count)
        draw.rectangle((x0, height - swatch, x1 - 1, height - 1), fill=color)


# --- provider ------------------------------------------------------------------------------------


class PreviewProvider:
    """The offline provider: free, instant, deterministic, and already in the delivery format.

    Drawing and encoding hold the GIL for most of their ~20 ms: given the image process pool,
    both run there in one step, so a serving process's event loop never waits on them; without
    one they run in threads, with a progress report between the two.
    """

    name: str = NAME
    model: str = MODEL

    def __init__(self, executor: Executor | None = None) -> None:
        self.executor = executor

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        compiled = request.compiled
        require_dialect(compiled, NAME, "preview")
        started = time.perf_counter()
        await progress(0.1)
        try:
            if self.executor is not None:
                render = functools.partial(
                    render_preview,
                    compiled.payload,
                    prompt=compiled.prompt,
                    delivery=request.delivery,
                )
                data = await asyncio.get_running_loop().run_in_executor(self.executor, render)
            else:
                image = await asyncio.to_thread(
                    draw_preview, compiled.payload, prompt=compiled.prompt
                )
                await progress(0.5)
                data = await asyncio.to_thread(encode_image, image, request.delivery)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(
                "invalid_request", f"the preview scene is incomplete: {exc}", retryable=False
            ) from exc
        await progress(0.9)
        return ProviderImage(
            data=data,
            content_type=CONTENT_TYPES[request.delivery],
            model=MODEL,
            seed=compiled.seed,
            cost_usd=0.0,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
