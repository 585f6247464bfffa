"""The consistency report: every check on one decoded image, stored and read back as JSON."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
from PIL import Image

from caverna.brand.registry import PackRegistry
from caverna.consistency.compliance import StoredFacts
from caverna.consistency.phash import phash, to_hex
from caverna.consistency.report import (
    ANALYSIS_SIDE,
    SCHEMA_VERSION,
    WEIGHTS,
    ConsistencyReport,
    Expectations,
    ReportFormatError,
    analyse,
)
from caverna.imaging import encode_image
from caverna.prompting.engine import PromptEngine
from caverna.providers.preview import draw_preview

REGISTRY = PackRegistry()
PACK = REGISTRY.get("capitao-caverna")
ENGINE = PromptEngine(REGISTRY)
FRAME = "onboarding/carving-the-goals"  # key light from the left, 2200 K


def render(frame: str = FRAME, **changes: Any) -> Image.Image:
    compiled = ENGINE.compile({"frame": frame, "seed": 5}, "preview")
    scene: dict[str, Any] = copy.deepcopy(compiled.payload)
    scene["lighting"].update(changes)
    return draw_preview(scene, prompt=compiled.prompt)


ASPECT = ENGINE.compile({"frame": FRAME}, "preview").params["aspect_ratio"]


def expectations(**extra: Any) -> Expectations:
    return Expectations.for_pack(
        PACK, frame=FRAME, aspect_ratio=ASPECT, delivery_format="webp", **extra
    )


def test_a_frame_drawn_as_specified_passes_every_check() -> None:
    image = render()
    facts = StoredFacts(image.width, image.height, "webp", has_metadata=True)
    report = analyse(image, expectations(), facts=facts)
    statuses = {check.name: check.status for check in report.checks}
    assert statuses["format"] == "pass"
    assert statuses["palette"] == "pass"
    assert statuses["lighting"] in ("pass", "warn")  # warmth of the highlights may be neutral
    assert report.check("lighting") is not None
    assert report.check("lighting").measured["side"] == "left"  # type: ignore[union-attr]
    assert statuses["duplicates"] == "skipped"
    assert report.overall_score is not None
    assert report.overall_score >= 0.75
    assert max(report.analysed_size) == ANALYSIS_SIDE
    assert report.image_size == image.size
    assert sum(share.weight for share in report.dominant) == pytest.approx(1.0, abs=1e-3)


def test_light_from_the_wrong_side_fails_the_report() -> None:
    report = analyse(render(key_side="right"), expectations())
    lighting = report.check("lighting")
    assert lighting is not None
    assert lighting.status == "fail"
    assert report.status == "fail"
    good = analyse(render(), expectations())
    assert report.overall_score is not None
    assert good.overall_score is not None
    assert report.overall_score < good.overall_score


def test_the_overall_score_is_the_weighted_mean_of_the_checks_that_ran() -> None:
    report = analyse(render(), expectations())
    ran = [c for c in report.checks if c.score is not None]
    expected = sum(WEIGHTS[c.name] * (c.score or 0) for c in ran) / sum(
        WEIGHTS[c.name] for c in ran
    )
    assert report.overall_score == pytest.approx(expected, abs=1e-4)


def test_near_duplicate_of_a_sibling_is_reported_by_its_id() -> None:
    image = render()
    copy_hash = to_hex(phash(image.resize((300, 375))))
    other_hash = to_hex(phash(render("onboarding/the-invitation")))
    report = analyse(
        image, expectations(compare_hashes={"frame-3": copy_hash, "frame-1": other_hash})
    )
    duplicates = report.check("duplicates")
    assert duplicates is not None
    assert duplicates.status == "warn"
    assert [d["id"] for d in duplicates.measured["near_duplicates"]] == ["frame-3"]


def test_analyse_reads_facts_from_a_decoded_image_without_them() -> None:
    data = encode_image(render(), "png")
    decoded = Image.open(io.BytesIO(data))
    report = analyse(decoded, expectations())
    fmt = report.check("format")
    assert fmt is not None
    assert fmt.measured["format"] == "png"
    assert fmt.status == "fail"  # webp was asked for and the bytes carry no metadata


def test_json_round_trip_keeps_every_value() -> None:
    report = analyse(render(), expectations())
    text = report.to_json()
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    assert ConsistencyReport.from_json(text) == report


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "must be JSON"),
        ("[1, 2]", "JSON object"),
        ('{"schema_version": 99}', "unsupported consistency report schema_version 99"),
    ],
)
def test_unreadable_reports_get_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ReportFormatError, match=message):
        ConsistencyReport.from_json(text)


def test_a_report_with_a_bad_field_names_the_field() -> None:
    data = json.loads(analyse(render(), expectations()).to_json())
    data["phash"] = "xyz"
    with pytest.raises(ReportFormatError, match="phash") as caught:
        ConsistencyReport.from_json(json.dumps(data))
    assert caught.value.code == "invalid_consistency_report"


def test_expectations_from_a_pack_reject_an_unknown_frame() -> None:
    with pytest.raises(ValueError, match="no frame 'onboarding/nope'"):
        Expectations.for_pack(PACK, frame="onboarding/nope")
    plain = Expectations.for_pack(PACK)
    assert plain.light_side is None
    assert len(plain.palette) == len(PACK.model.foundation.technical.palette)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"light_side": "sideways"}, "light_side 'sideways' is not one of left, right"),
        ({"exposure_range": (0.9, 0.1)}, "exposure_range"),
        ({"duplicate_threshold": 65}, "duplicate_threshold"),
        ({"compare_hashes": {"img-1": "zz" * 8}}, r"compare_hashes\['img-1'\]"),
    ],
)
def test_bad_expectations_are_rejected_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Expectations(**changes)


@pytest.mark.parametrize("mode", ["P", "L", "LA", "RGBA", "CMYK", "I"])
def test_images_in_any_common_mode_are_analysed(mode: str) -> None:
    image = render().convert(mode)
    report = analyse(image, Expectations.for_pack(PACK, frame=FRAME))
    assert report.image_size == image.size
    assert max(report.analysed_size) == ANALYSIS_SIDE
    assert report.status in ("pass", "warn", "fail")
