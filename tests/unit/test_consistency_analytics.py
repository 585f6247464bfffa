"""Approval analytics: Wilson intervals against known values, grouping, table and chart."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from caverna.consistency.analytics import (
    ReviewRow,
    chart_png,
    group_rows,
    table,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        (5, 10, 0.2366, 0.7634),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 1, 0.2065, 1.0),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_interval_known_values(successes: int, trials: int, low: float, high: float) -> None:
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="between 0 and 3"):
        wilson_interval(4, 3)


ROWS = [
    ReviewRow("e1-aaa", "openai", pose="standing", variant="a", approved=True, score=0.9),
    ReviewRow("e1-aaa", "openai", pose="standing", variant="a", approved=True, score=0.7),
    ReviewRow("e1-aaa", "openai", pose="standing", variant="a", approved=False, score=0.5),
    ReviewRow("e1-aaa", "openai", pose="standing", variant="a", approved=None, score=None),
    ReviewRow("e1-aaa", "openai", pose="standing", variant="b", approved=False, score=0.4),
    ReviewRow("e1-bbb", "stability", pose="sitting", variant=None, approved=True, score=0.8),
]


def test_groups_count_rate_interval_and_mean_score() -> None:
    stats = group_rows(ROWS, by=("template_version", "provider", "pose", "variant"))
    by_key = {s.key: s for s in stats}
    first = by_key[("e1-aaa", "openai", "standing", "a")]
    assert (first.count, first.reviewed, first.approved) == (4, 3, 2)
    assert first.approval_rate == pytest.approx(2 / 3)
    assert first.interval == pytest.approx(wilson_interval(2, 3))
    assert first.mean_score == pytest.approx(0.7)
    assert by_key[("e1-bbb", "stability", "sitting", "-")].approval_rate == 1.0
    assert [s.key for s in stats] == sorted(by_key)


def test_a_group_nobody_reviewed_has_no_rate() -> None:
    (only,) = group_rows([ReviewRow("e1", "preview")], by=("provider",))
    assert only.approval_rate is None
    assert only.interval is None
    assert only.mean_score is None


def test_grouping_by_an_unknown_field_is_rejected() -> None:
    with pytest.raises(ValueError, match="group by one or more of"):
        group_rows(ROWS, by=("colour",))  # type: ignore[arg-type]


def test_table_and_chart() -> None:
    stats = group_rows(ROWS, by=("provider", "variant"))
    text = table(stats, by=("provider", "variant"))
    assert text.splitlines()[0].startswith("| provider | variant | count")
    assert "66.7%" in text
    chart = Image.open(io.BytesIO(chart_png(stats)))
    assert chart.format == "PNG"
    assert chart.height > 34 * len(stats)
    with pytest.raises(ValueError, match="at least one group"):
        chart_png([])


def test_chart_bar_length_follows_the_approval_rate() -> None:
    rows = [ReviewRow("e1", "openai", approved=i < 3) for i in range(4)]  # 75%
    (stats,) = group_rows(rows, by=("provider",))
    chart = Image.open(io.BytesIO(chart_png([stats]))).convert("RGB")
    x0, plot, row_top = 16 * 2 + 320, 480, 16 + 28
    inside = chart.getpixel((x0 + round(plot * 0.70), row_top + 10))
    outside = chart.getpixel((x0 + round(plot * 0.80), row_top + 10))
    assert inside == (70, 120, 180)
    assert outside != inside
