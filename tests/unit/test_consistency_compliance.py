"""Format compliance: size, aspect ratio, delivery format and metadata of the stored image."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from caverna.consistency.compliance import (
    FormatExpectation,
    StoredFacts,
    check_compliance,
    facts_from_image,
)


def test_everything_as_requested_passes() -> None:
    facts = StoredFacts(width=912, height=1144, format="webp", has_metadata=True)
    wanted = FormatExpectation(aspect_ratio="4:5", size=(912, 1144), format="webp")
    result = check_compliance(facts, wanted)
    assert result.status == "pass"
    assert result.score == 1.0
    assert [item.name for item in result.items] == ["size", "aspect_ratio", "format", "metadata"]


def test_snapped_sizes_pass_and_a_wrong_shape_fails() -> None:
    snapped = StoredFacts(width=768, height=1344, format="png", has_metadata=True)  # 1.6% off
    assert check_compliance(snapped, FormatExpectation(aspect_ratio="9:16")).status == "pass"
    square = StoredFacts(width=1024, height=1024, format="png", has_metadata=True)
    result = check_compliance(square, FormatExpectation(aspect_ratio="9:16"))
    assert result.status == "fail"
    assert "off 9:16" in result.notes[0]


def test_wrong_format_and_missing_metadata_fail_and_a_different_size_warns() -> None:
    facts = StoredFacts(width=1000, height=1000, format="JPG", has_metadata=False)
    wanted = FormatExpectation(size=(1024, 1024), format="png")
    result = check_compliance(facts, wanted)
    by_name = {item.name: item.status for item in result.items}
    assert by_name == {"size": "warn", "format": "fail", "metadata": "fail"}
    assert result.status == "fail"
    assert result.score == pytest.approx(0.5 / 3)


def test_facts_from_a_decoded_png_with_and_without_parameters() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a prompt")
    with_meta, without = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (40, 50)).save(with_meta, format="PNG", pnginfo=info)
    Image.new("RGB", (40, 50)).save(without, format="PNG")
    found = facts_from_image(Image.open(io.BytesIO(with_meta.getvalue())))
    assert found == StoredFacts(width=40, height=50, format="png", has_metadata=True)
    assert not facts_from_image(Image.open(io.BytesIO(without.getvalue()))).has_metadata


def test_bad_expectations_are_rejected() -> None:
    with pytest.raises(ValueError, match="W:H"):
        FormatExpectation(aspect_ratio="4x5")
    with pytest.raises(ValueError, match="positive"):
        StoredFacts(width=0, height=10, format=None, has_metadata=False)
