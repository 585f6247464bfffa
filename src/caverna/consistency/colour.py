"""Colour science for the checks: sRGB to CIELAB (D65) and the CIEDE2000 colour difference.

CIEDE2000 is used rather than a distance in RGB because equal steps of it look roughly equally
different to people, which is what "on palette" means. The formula follows Sharma, Wu and Dalal
(2005), whose published test pairs the unit tests check to four decimals.
"""

from __future__ import annotations

import math
from typing import NamedTuple

RGB = tuple[int, int, int]

# D65 reference white for XYZ scaled so that Y of white is 1
_WHITE_X = 0.95047
_WHITE_Y = 1.0
_WHITE_Z = 1.08883
_EPSILON = 216 / 24389
_KAPPA = 24389 / 27
_POW25_7 = 25.0**7


class Lab(NamedTuple):
    L: float  # the CIE names lightness L (upper case) and the colour axes a and b
    a: float
    b: float


def _linear(channel: int) -> float:
    value = channel / 255
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


# 256 values, computed once: converting a palette of pixels does table look-ups, not powers
_LINEAR = tuple(_linear(v) for v in range(256))


def _f(t: float) -> float:
    return t ** (1 / 3) if t > _EPSILON else (_KAPPA * t + 16) / 116


def srgb_to_lab(rgb: RGB) -> Lab:
    """CIELAB of an 8-bit sRGB colour under D65 (the white point sRGB is defined for)."""
    r, g, b = (_LINEAR[c] for c in rgb)
    x = 0.4124564 * r + 0.3575761 * g + 0.1804375 * b
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = 0.0193339 * r + 0.1191920 * g + 0.9503041 * b
    fx, fy, fz = _f(x / _WHITE_X), _f(y / _WHITE_Y), _f(z / _WHITE_Z)
    return Lab(116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz))


def hex_to_rgb(value: str) -> RGB:
    """`#RRGGBB` (as the pack schema requires) to a tuple; anything else is a ValueError."""
    text = value.strip()
    if len(text) != 7 or text[0] != "#":
        raise ValueError(f"expected a colour as #RRGGBB, got {value!r}")
    number = int(text[1:], 16)
    return (number >> 16) & 0xFF, (number >> 8) & 0xFF, number & 0xFF


def rgb_to_hex(rgb: RGB) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


def _hue(b: float, a: float) -> float:
    if a == 0 and b == 0:
        return 0.0
    angle = math.degrees(math.atan2(b, a))
    return angle + 360 if angle < 0 else angle


def ciede2000(
    first: Lab, second: Lab, *, k_l: float = 1.0, k_c: float = 1.0, k_h: float = 1.0
) -> float:
    """ΔE00 between two CIELAB colours; about 1 is a just-noticeable difference side by side."""
    l1, a1, b1 = first
    l2, a2, b2 = second
    c1 = math.hypot(a1, b1)
    c2 = math.hypot(a2, b2)
    c_mean7 = ((c1 + c2) / 2) ** 7
    g = 0.5 * (1 - math.sqrt(c_mean7 / (c_mean7 + _POW25_7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p, h2p = _hue(b1, a1p), _hue(b2, a2p)

    delta_l = l2 - l1
    delta_c = c2p - c1p
    if c1p * c2p == 0:
        delta_h_angle = 0.0
    else:
        delta_h_angle = h2p - h1p
        if delta_h_angle > 180:
            delta_h_angle -= 360
        elif delta_h_angle < -180:
            delta_h_angle += 360
    delta_h = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(delta_h_angle) / 2)

    l_mean = (l1 + l2) / 2
    c_mean_p = (c1p + c2p) / 2
    if c1p * c2p == 0:
        h_mean = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        h_mean = (h1p + h2p) / 2
    elif h1p + h2p < 360:
        h_mean = (h1p + h2p + 360) / 2
    else:
        h_mean = (h1p + h2p - 360) / 2

    t = (
        1
        - 0.17 * math.cos(math.radians(h_mean - 30))
        + 0.24 * math.cos(math.radians(2 * h_mean))
        + 0.32 * math.cos(math.radians(3 * h_mean + 6))
        - 0.20 * math.cos(math.radians(4 * h_mean - 63))
    )
    delta_theta = 30 * math.exp(-(((h_mean - 275) / 25) ** 2))
    c_mean_p7 = c_mean_p**7
    r_c = 2 * math.sqrt(c_mean_p7 / (c_mean_p7 + _POW25_7))
    l_offset = (l_mean - 50) ** 2
    s_l = 1 + 0.015 * l_offset / math.sqrt(20 + l_offset)
    s_c = 1 + 0.045 * c_mean_p
    s_h = 1 + 0.015 * c_mean_p * t
    r_t = -math.sin(math.radians(2 * delta_theta)) * r_c

    term_l = delta_l / (k_l * s_l)
    term_c = delta_c / (k_c * s_c)
    term_h = delta_h / (k_h * s_h)
    return math.sqrt(term_l**2 + term_c**2 + term_h**2 + r_t * term_c * term_h)
