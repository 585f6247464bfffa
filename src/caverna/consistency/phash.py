"""A 64-bit perceptual hash (DCT pHash) and the Hamming distance between two of them.

The hash keeps the signs of the lowest 8x8 frequencies of a 32x32 grey copy against their
median, so it survives resizing, re-encoding and mild colour changes, and changes when the layout
of light and dark changes. Plain Python: 32x32 is small enough that the separable DCT of the
eight needed rows and columns costs about a millisecond.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from PIL import Image

HASH_SIDE = 32
LOW = 8
# Distances out of 64 bits. Resized and re-encoded copies land at 0-6; unrelated images near 32
# (half the bits); ≤ NEAR_DUPLICATE_BITS is reported as a near-duplicate.
NEAR_DUPLICATE_BITS = 10

# cos((2x + 1) u pi / 2N) for the LOW lowest frequencies u and the N sample positions x
_COSINES = tuple(
    tuple(math.cos((2 * x + 1) * u * math.pi / (2 * HASH_SIDE)) for x in range(HASH_SIDE))
    for u in range(LOW)
)


def phash(image: Image.Image) -> int:
    """The 64-bit hash as an int (bit 63 is the lowest frequency, the DC term, which is skipped
    when taking the median because it only says how bright the image is)."""
    grey = image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    pixels = grey.tobytes()
    rows = [pixels[y * HASH_SIDE : (y + 1) * HASH_SIDE] for y in range(HASH_SIDE)]
    # first pass: the LOW lowest horizontal frequencies of every row
    partial = [
        [sum(c * p for c, p in zip(cos_u, row, strict=True)) for cos_u in _COSINES] for row in rows
    ]
    # second pass: the LOW lowest vertical frequencies of each of those columns
    coefficients = [
        sum(cos_v[y] * partial[y][u] for y in range(HASH_SIDE))
        for cos_v in _COSINES
        for u in range(LOW)
    ]
    ordered = sorted(coefficients[1:])
    median = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    value = 0
    for coefficient in coefficients:
        value = (value << 1) | (1 if coefficient > median else 0)
    return value


def to_hex(value: int) -> str:
    return f"{value:016x}"


def from_hex(text: str) -> int:
    """A stored hash back to an int; anything but 16 hex digits is a ValueError."""
    if len(text) != 16 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
        raise ValueError(f"a perceptual hash is 16 hex digits, got {text!r}")
    return int(text, 16)


def hamming(first: int, second: int) -> int:
    return (first ^ second).bit_count()


def near_duplicates(
    value: int, others: Mapping[str, int], threshold: int = NEAR_DUPLICATE_BITS
) -> list[tuple[str, int]]:
    """(id, distance) of each of `others` within `threshold` bits, nearest first."""
    found = [(key, hamming(value, other)) for key, other in others.items()]
    return sorted(((k, d) for k, d in found if d <= threshold), key=lambda kd: (kd[1], kd[0]))
