"""Perceptual hash: a resized or re-encoded copy is a near-duplicate, another image is not."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from caverna.brand.registry import PackRegistry
from caverna.consistency.phash import (
    NEAR_DUPLICATE_BITS,
    from_hex,
    hamming,
    near_duplicates,
    phash,
    to_hex,
)
from caverna.prompting.engine import PromptEngine
from caverna.providers.preview import draw_preview

ENGINE = PromptEngine(PackRegistry())


def frame_image(frame: str, seed: int = 5) -> Image.Image:
    compiled = ENGINE.compile({"frame": f"onboarding/{frame}", "seed": seed}, "preview")
    return draw_preview(compiled.payload, prompt=compiled.prompt)


def reencoded(image: Image.Image, fmt: str, scale: float, **options: int) -> Image.Image:
    small = image.resize((round(image.width * scale), round(image.height * scale)))
    out = io.BytesIO()
    small.save(out, format=fmt, **options)
    return Image.open(io.BytesIO(out.getvalue()))


def shapes(seed: int) -> Image.Image:
    """A few flat shapes placed by `seed`, on a plain background (made with Pillow alone)."""
    image = Image.new("RGB", (256, 256), (230, 230, 230))
    draw = ImageDraw.Draw(image)
    for index in range(4):
        x = (seed * 53 + index * 97) % 200
        y = (seed * 31 + index * 61) % 200
        draw.ellipse((x, y, x + 56, y + 56), fill=(20 + index * 40, 40, 90))
    return image


@pytest.mark.parametrize(
    ("fmt", "scale", "options"),
    [("JPEG", 0.5, {"quality": 70}), ("WEBP", 0.25, {"quality": 60}), ("PNG", 1.5, {})],
)
def test_a_resized_reencoded_copy_is_a_near_duplicate(
    fmt: str, scale: float, options: dict[str, int]
) -> None:
    original = frame_image("training")
    distance = hamming(phash(original), phash(reencoded(original, fmt, scale, **options)))
    assert distance <= 4


@pytest.mark.parametrize("other", ["the-invitation", "carving-the-goals", "wall-of-progress"])
def test_a_different_frame_is_not_a_near_duplicate(other: str) -> None:
    distance = hamming(phash(frame_image("training")), phash(frame_image(other)))
    assert distance > 2 * NEAR_DUPLICATE_BITS


def test_pillow_shapes_near_and_far() -> None:
    first = phash(shapes(1))
    assert hamming(first, phash(shapes(1).resize((100, 100)))) <= 4
    assert hamming(first, phash(shapes(2))) > NEAR_DUPLICATE_BITS


def test_near_duplicates_lists_ids_within_the_threshold_nearest_first() -> None:
    target = phash(frame_image("training"))
    others = {
        "copy": phash(reencoded(frame_image("training"), "JPEG", 0.5, quality=60)),
        "other": phash(frame_image("the-invitation")),
    }
    found = near_duplicates(target, others)
    assert [key for key, _ in found] == ["copy"]


def test_hex_round_trip_and_bad_hash() -> None:
    value = phash(shapes(3))
    assert from_hex(to_hex(value)) == value
    assert len(to_hex(0)) == 16
    with pytest.raises(ValueError, match="16 hex digits"):
        from_hex("abc")
