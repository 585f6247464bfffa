"""Format compliance: the stored image is the size, shape and format that was asked for, and
carries its provenance metadata.

It works on facts about the stored bytes (which the pipeline already knows after encoding), not
on pixels, so it costs nothing and cannot be fooled by what the picture shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

Status = Literal["pass", "warn", "fail"]

# Relative error of width/height against the requested ratio. Providers snap sizes to multiples
# of 8 or 64, which moves the ratio by up to about 2% (9:16 at 768x1344 is 1.6% off).
RATIO_PASS = 0.02
RATIO_WARN = 0.05
# keys under which Pillow exposes embedded XMP or generation parameters once decoded
METADATA_KEYS = ("xmp", "XML:com.adobe.xmp", "parameters")
_FORMAT_ALIASES = {"jpg": "jpeg"}
_STATUS_SCORE: dict[Status, float] = {"pass": 1.0, "warn": 0.5, "fail": 0.0}


@dataclass(frozen=True, slots=True)
class StoredFacts:
    """What is known about the stored bytes: their pixel size, container format and metadata."""

    width: int
    height: int
    format: str | None  # "webp", "png", "jpeg", "avif"; None when unknown
    has_metadata: bool

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"an image size must be positive, got {self.width}x{self.height}")


@dataclass(frozen=True, slots=True)
class FormatExpectation:
    """What the job asked for; a field left as None is not checked."""

    aspect_ratio: str | None = None  # "4:5"
    size: tuple[int, int] | None = None  # (width, height) the dialect requested
    format: str | None = None
    metadata_required: bool = True

    def __post_init__(self) -> None:
        if self.aspect_ratio is not None:
            parse_ratio(self.aspect_ratio)


@dataclass(frozen=True, slots=True)
class ComplianceItem:
    name: Literal["size", "aspect_ratio", "format", "metadata"]
    status: Status
    measured: Any
    expected: Any


@dataclass(frozen=True, slots=True)
class ComplianceResult:
    items: tuple[ComplianceItem, ...]
    score: float | None  # None when nothing was checked
    status: Status
    notes: tuple[str, ...] = field(default=())


def parse_ratio(text: str) -> float:
    """ "4:5" -> 0.8 (width over height); a malformed ratio is a ValueError naming it."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"an aspect ratio is two positive whole numbers as W:H, got {text!r}")
    return int(parts[0]) / int(parts[1])


def normalise_format(name: str | None) -> str | None:
    if name is None:
        return None
    lowered = name.strip().lower()
    return _FORMAT_ALIASES.get(lowered, lowered)


def facts_from_image(image: Image.Image, info: Mapping[str, Any] | None = None) -> StoredFacts:
    """Facts read from a decoded image: a fallback for callers without the stored bytes' facts."""
    found = image.info if info is None else info
    return StoredFacts(
        width=image.width,
        height=image.height,
        format=normalise_format(image.format),
        has_metadata=any(found.get(key) for key in METADATA_KEYS),
    )


def check_compliance(facts: StoredFacts, expected: FormatExpectation) -> ComplianceResult:
    items: list[ComplianceItem] = []
    notes: list[str] = []
    measured_size = (facts.width, facts.height)
    if expected.size is not None:
        same = measured_size == tuple(expected.size)
        items.append(
            ComplianceItem("size", "pass" if same else "warn", measured_size, expected.size)
        )
        if not same:
            notes.append(
                f"size {facts.width}x{facts.height}, requested"
                f" {expected.size[0]}x{expected.size[1]}"
            )
    if expected.aspect_ratio is not None:
        wanted = parse_ratio(expected.aspect_ratio)
        actual = facts.width / facts.height
        error = abs(actual - wanted) / wanted
        status: Status = "pass" if error <= RATIO_PASS else "fail"
        if status == "fail" and error <= RATIO_WARN:
            status = "warn"
        items.append(
            ComplianceItem("aspect_ratio", status, round(actual, 4), expected.aspect_ratio)
        )
        if status != "pass":
            notes.append(f"aspect {actual:.3f} is {error:.1%} off {expected.aspect_ratio}")
    if expected.format is not None:
        want, got = normalise_format(expected.format), normalise_format(facts.format)
        status = "pass" if want == got else "fail"
        items.append(ComplianceItem("format", status, got, want))
        if status != "pass":
            notes.append(f"delivered as {got or 'unknown'}, expected {want}")
    if expected.metadata_required:
        status = "pass" if facts.has_metadata else "fail"
        items.append(ComplianceItem("metadata", status, facts.has_metadata, True))
        if status != "pass":
            notes.append("no embedded provenance metadata (XMP or parameters)")
    if not items:
        return ComplianceResult((), None, "pass", ())
    score = sum(_STATUS_SCORE[item.status] for item in items) / len(items)
    statuses = {item.status for item in items}
    overall: Status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    return ComplianceResult(tuple(items), score, overall, tuple(notes))
