"""The pieces of the consistency pass that need no database: the near-duplicate comparison, the
re-roll seeds and the group-by parsing of the reports."""

from __future__ import annotations

import uuid

import pytest
from PIL import Image

from caverna.consistency.report import Expectations, analyse
from caverna.services.consistency import reroll_seed, with_comparisons
from caverna.services.consistency_reports import parse_group_by


def test_a_near_duplicate_lowers_the_score_and_names_the_other_image() -> None:
    image = Image.new("RGB", (64, 64), "#203040")
    image.paste((240, 200, 150), (0, 0, 32, 64))
    report = analyse(image, Expectations(palette=(("cream", "#F0C896"),)))
    assert report.check("duplicates") is not None
    assert report.score_of("duplicates") is None  # nothing to compare with yet

    flagged = with_comparisons(report, {"img-1": report.phash, "img-2": "0" * 16})
    duplicates = flagged.check("duplicates")
    assert duplicates is not None
    assert duplicates.status == "warn"
    assert [d["id"] for d in duplicates.measured["near_duplicates"]] == ["img-1"]
    assert duplicates.measured["compared"] == 2
    assert flagged.overall_score is not None
    assert report.overall_score is not None
    assert flagged.overall_score < report.overall_score

    clean = with_comparisons(report, {"img-2": "0" * 16})
    assert clean.score_of("duplicates") == 1.0
    assert clean.overall_score is not None
    assert clean.overall_score >= report.overall_score
    assert with_comparisons(report, {}).score_of("duplicates") is None


def test_reroll_seeds_are_stable_distinct_and_never_the_original() -> None:
    root = uuid.UUID(int=7)
    seeds = [reroll_seed(root, attempt, None) for attempt in range(1, 6)]
    assert seeds == [reroll_seed(root, attempt, None) for attempt in range(1, 6)]
    assert len(set(seeds)) == 5
    for attempt, seed in enumerate(seeds, start=1):
        assert reroll_seed(root, attempt, seed) != seed


def test_group_by_accepts_known_fields_in_report_order_and_names_the_allowed_ones() -> None:
    assert parse_group_by(None)[0] == "template_version"
    assert parse_group_by("variant, provider") == ("provider", "variant")
    for bad in ("colour", "variant,variant", ",", "provider,colour"):
        with pytest.raises(ValueError, match="template_version, provider, pose, frame, variant"):
            parse_group_by(bad)
