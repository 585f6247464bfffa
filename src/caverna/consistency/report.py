"""The consistency report of one image: every check's score, status, measurement and expectation.

`analyse` takes an already decoded image, so the post-processing stage that also makes the
thumbnail decodes once. It works on one small copy (at most ANALYSIS_SIDE pixels a side, made with
a box filter): every measurement here is about colour areas and broad light, which a 128-pixel
copy keeps, and it keeps a 1024x1024 image well under 30 ms of CPU.

The report is stored as JSON on the image row; `schema_version` lets a reader refuse, with a clear
error, a report written by a newer layout instead of misreading it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from caverna.brand.pack import BrandPack
from caverna.brand.schema import LightSide
from caverna.consistency.colour import hex_to_rgb
from caverna.consistency.compliance import (
    FormatExpectation,
    StoredFacts,
    check_compliance,
    facts_from_image,
)
from caverna.consistency.lighting import (
    EXPOSURE_RANGE,
    LightMeasurement,
    check_lighting,
    measure_light,
)
from caverna.consistency.palette import (
    BAD_DELTA_E,
    GOOD_DELTA_E,
    PASS_SCORE,
    WARN_SCORE,
    DominantColour,
    dominant_colours,
    match_palette,
)
from caverna.consistency.phash import NEAR_DUPLICATE_BITS, from_hex, near_duplicates, phash, to_hex

SCHEMA_VERSION = 1
LIGHT_SIDES: tuple[str, ...] = get_args(LightSide)
ANALYSIS_SIDE = 128
CheckName = Literal["format", "palette", "lighting", "duplicates"]
Status = Literal["pass", "warn", "fail", "skipped"]
# Share of the overall score per check; checks that were skipped are left out and the rest
# renormalised. Palette and light are what the eye catches first across a set of images.
WEIGHTS: dict[str, float] = {"palette": 0.4, "lighting": 0.3, "format": 0.2, "duplicates": 0.1}
_PRECISION = 4


class ReportFormatError(ValueError):
    """A stored report that cannot be read: not JSON, another schema version, or a bad field."""

    code = "invalid_consistency_report"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckResult(_Model):
    name: CheckName
    status: Status
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    measured: dict[str, Any] = Field(default_factory=dict)
    expected: dict[str, Any] = Field(default_factory=dict)
    notes: tuple[str, ...] = ()


class ColourShare(_Model):
    hex: str = Field(pattern=r"^#[0-9A-F]{6}$")
    weight: float = Field(ge=0.0, le=1.0)

    def dominant(self) -> DominantColour:
        return DominantColour(hex_to_rgb(self.hex), self.weight)


class ConsistencyReport(_Model):
    schema_version: int = SCHEMA_VERSION
    overall_score: float | None = Field(default=None, ge=0.0, le=1.0)
    status: Status
    checks: tuple[CheckResult, ...]
    image_size: tuple[int, int]
    analysed_size: tuple[int, int]
    phash: str = Field(pattern=r"^[0-9a-f]{16}$")
    brightness: float = Field(ge=0.0, le=1.0)
    dominant: tuple[ColourShare, ...]

    def check(self, name: CheckName) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def score_of(self, name: CheckName) -> float | None:
        found = self.check(name)
        return found.score if found else None

    def dominant_colours(self) -> list[DominantColour]:
        return [share.dominant() for share in self.dominant]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ConsistencyReport:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReportFormatError(f"a consistency report must be JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ReportFormatError("a consistency report must be a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ReportFormatError(
                f"unsupported consistency report schema_version {version!r};"
                f" this version reads {SCHEMA_VERSION}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
            raise ReportFormatError(
                f"invalid consistency report field(s): {', '.join(fields)}"
            ) from None


@dataclass(frozen=True, slots=True)
class Expectations:
    """What one image should look like; every part left empty is a check skipped, not failed."""

    palette: tuple[tuple[str, str], ...] = ()  # (name, "#RRGGBB") of the pack
    light_side: str | None = None  # FrameLighting.key_side
    color_temperature_k: int | None = None
    exposure_range: tuple[float, float] = EXPOSURE_RANGE
    format: FormatExpectation | None = None
    # perceptual hashes (16 hex digits) of the other frames of the sequence and the user's recent
    # images, by any id the caller wants to see in the report
    compare_hashes: Mapping[str, str] = field(default_factory=dict)
    duplicate_threshold: int = NEAR_DUPLICATE_BITS

    def __post_init__(self) -> None:
        """Refuse expectations that would make a check meaningless, naming the field."""
        if self.light_side is not None and self.light_side not in LIGHT_SIDES:
            raise ValueError(
                f"light_side {self.light_side!r} is not one of {', '.join(LIGHT_SIDES)}"
            )
        low, high = self.exposure_range
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"exposure_range must be 0 <= low < high <= 1, got {low}, {high}")
        if not 0 <= self.duplicate_threshold <= 64:
            raise ValueError("duplicate_threshold is a number of bits from 0 to 64")
        for key, value in self.compare_hashes.items():
            try:
                from_hex(value)
            except ValueError as exc:
                raise ValueError(f"compare_hashes[{key!r}]: {exc}") from None

    @classmethod
    def for_pack(
        cls,
        pack: BrandPack,
        *,
        frame: str | None = None,
        aspect_ratio: str | None = None,
        size: tuple[int, int] | None = None,
        delivery_format: str | None = None,
        metadata_required: bool = True,
        compare_hashes: Mapping[str, str] | None = None,
    ) -> Expectations:
        """From a pack, and a frame of it if the image is one (`sequence/frame`).

        Without a frame the light's side is not checked: the pack's default lighting is prose
        ("key light from the left"), not a side the code could rely on.
        """
        technical = pack.model.foundation.technical
        entry = pack.frames.get(frame) if frame else None
        if frame and entry is None:
            raise ValueError(f"no frame '{frame}' in pack '{pack.id}'")
        lighting = entry.frame.lighting if entry else None
        return cls(
            palette=tuple((c.name, c.hex) for c in technical.palette),
            light_side=lighting.key_side if lighting else None,
            color_temperature_k=(
                lighting.color_temperature_k if lighting else technical.lighting.color_temperature_k
            ),
            format=FormatExpectation(
                aspect_ratio=aspect_ratio,
                size=size,
                format=delivery_format,
                metadata_required=metadata_required,
            ),
            compare_hashes=dict(compare_hashes or {}),
        )


def analysis_copy(image: Image.Image, side: int = ANALYSIS_SIDE) -> Image.Image:
    """An RGB copy at most `side` pixels a side, box-filtered (the mean of each block)."""
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    scale = side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    return image.convert("RGB") if image.mode != "RGB" else image


def analyse(
    image: Image.Image, expectations: Expectations, *, facts: StoredFacts | None = None
) -> ConsistencyReport:
    """Every check on one decoded image. `facts` describe the stored bytes; without them the
    size, format and metadata are read from the decoded image."""
    if image.width < 1 or image.height < 1:
        raise ValueError("cannot analyse an empty image")
    small = analysis_copy(image)
    dominant = dominant_colours(small)
    light = measure_light(small)
    hashed = phash(small)
    checks = (
        _format_check(facts or facts_from_image(image), expectations.format),
        _palette_check(dominant, expectations.palette),
        _lighting_check(light, expectations),
        _duplicates_check(hashed, expectations),
    )
    return ConsistencyReport(
        overall_score=overall_score(checks),
        status=overall_status(checks),
        checks=checks,
        image_size=image.size,
        analysed_size=small.size,
        phash=to_hex(hashed),
        brightness=_round(light.brightness),
        dominant=tuple(ColourShare(hex=c.hex, weight=_round(c.weight)) for c in dominant),
    )


def overall_score(checks: tuple[CheckResult, ...]) -> float | None:
    scored = [(WEIGHTS[c.name], c.score) for c in checks if c.score is not None]
    if not scored:
        return None
    return _round(sum(w * s for w, s in scored) / sum(w for w, _ in scored))


def overall_status(checks: tuple[CheckResult, ...]) -> Status:
    statuses = {c.status for c in checks}
    for status in ("fail", "warn", "pass"):
        if status in statuses:
            return status
    return "skipped"


def _round(value: float) -> float:
    return round(value, _PRECISION)


def _skipped(name: CheckName, why: str) -> CheckResult:
    return CheckResult(name=name, status="skipped", notes=(why,))


def _format_check(facts: StoredFacts, expected: FormatExpectation | None) -> CheckResult:
    if expected is None:
        return _skipped("format", "no format was specified")
    result = check_compliance(facts, expected)
    if result.score is None:
        return _skipped("format", "no format property was specified")
    return CheckResult(
        name="format",
        status=result.status,
        score=_round(result.score),
        measured={item.name: _jsonable(item.measured) for item in result.items},
        expected={item.name: _jsonable(item.expected) for item in result.items},
        notes=result.notes,
    )


def _palette_check(
    dominant: list[DominantColour], palette: tuple[tuple[str, str], ...]
) -> CheckResult:
    if not palette:
        return _skipped("palette", "no palette to compare with")
    result = match_palette(dominant, palette)
    status: Status = (
        "pass" if result.score >= PASS_SCORE else "warn" if result.score >= WARN_SCORE else "fail"
    )
    notes = () if status == "pass" else (f"mean ΔE00 {result.mean_delta_e:.1f} from the palette",)
    return CheckResult(
        name="palette",
        status=status,
        score=_round(result.score),
        measured={
            "mean_delta_e": _round(result.mean_delta_e),
            "dominant": [
                {
                    "hex": m.colour.hex,
                    "weight": _round(m.colour.weight),
                    "nearest": m.nearest,
                    "delta_e": _round(m.delta_e),
                }
                for m in result.matches
            ],
            "used": list(result.used),
            "unused": list(result.unused),
        },
        expected={
            "palette": [{"name": name, "hex": hex_} for name, hex_ in palette],
            "delta_e_good": GOOD_DELTA_E,
            "delta_e_bad": BAD_DELTA_E,
        },
        notes=notes,
    )


def _lighting_check(light: LightMeasurement, expectations: Expectations) -> CheckResult:
    result = check_lighting(
        light,
        expectations.light_side,
        expectations.color_temperature_k,
        expectations.exposure_range,
    )
    expected: dict[str, Any] = {"exposure_range": list(expectations.exposure_range)}
    if expectations.light_side is not None:
        expected["side"] = expectations.light_side
    if result.expected_warmth is not None:
        expected["warmth"] = result.expected_warmth
        expected["color_temperature_k"] = expectations.color_temperature_k
    return CheckResult(
        name="lighting",
        status=result.status,
        score=_round(result.score),
        measured={
            "brightness": _round(light.brightness),
            "dark_share": _round(light.dark_share),
            "bright_share": _round(light.bright_share),
            "gradient": [_round(light.gradient[0]), _round(light.gradient[1])],
            "side": light.side,
            "warmth_index": _round(light.warmth_index),
            "warmth": light.warmth,
            "direction_score": result.direction_score,
            "warmth_score": result.warmth_score,
            "exposure_score": result.exposure_score,
        },
        expected=expected,
        notes=result.notes,
    )


def _duplicates_check(hashed: int, expectations: Expectations) -> CheckResult:
    if not expectations.compare_hashes:
        return _skipped("duplicates", "no other images to compare with")
    others = {key: from_hex(value) for key, value in expectations.compare_hashes.items()}
    found = near_duplicates(hashed, others, expectations.duplicate_threshold)
    return CheckResult(
        name="duplicates",
        status="warn" if found else "pass",
        score=0.0 if found else 1.0,
        measured={
            "compared": len(others),
            "near_duplicates": [{"id": key, "distance": d} for key, d in found],
        },
        expected={"threshold_bits": expectations.duplicate_threshold},
        notes=tuple(f"near-duplicate of {key} ({d} of 64 bits differ)" for key, d in found),
    )


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
