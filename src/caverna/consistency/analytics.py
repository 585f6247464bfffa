"""Approval-loop analytics: approval rate and mean consistency score per group of images.

Rows are grouped by any of template_version, provider, pose, frame and variant. The approval
rate carries a Wilson 95% interval, which stays inside 0-1 and stays honest for the small counts
a new template or variant starts with (a normal interval around 2 of 2 would claim certainty).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

GroupField = Literal["template_version", "provider", "pose", "frame", "variant"]
GROUP_FIELDS: tuple[GroupField, ...] = ("template_version", "provider", "pose", "frame", "variant")
Z_95 = 1.959963984540054  # the standard normal quantile for a two-sided 95% interval


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """One completed image: where it came from, whether a reviewer approved it, its score.

    `approved` is None while nobody has reviewed it: it counts in `count` but not in the rate.
    """

    template_version: str
    provider: str
    pose: str | None = None
    frame: str | None = None
    variant: str | None = None
    approved: bool | None = None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class GroupStats:
    key: tuple[str, ...]
    count: int
    reviewed: int
    approved: int
    approval_rate: float | None
    interval: tuple[float, float] | None
    mean_score: float | None
    scored: int

    def label(self) -> str:
        return " · ".join(self.key)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a proportion of `successes` out of `trials`."""
    if trials < 1:
        raise ValueError("the Wilson interval needs at least one trial")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and {trials}, got {successes}")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def group_rows(
    rows: Iterable[ReviewRow], by: Sequence[GroupField] = GROUP_FIELDS
) -> list[GroupStats]:
    """One GroupStats per distinct combination of the `by` fields, sorted by that key."""
    unknown = [name for name in by if name not in GROUP_FIELDS]
    if unknown or not by:
        raise ValueError(
            f"group by one or more of {', '.join(GROUP_FIELDS)}; got {', '.join(by) or 'nothing'}"
        )
    buckets: dict[tuple[str, ...], list[ReviewRow]] = {}
    for row in rows:
        key = tuple(str(getattr(row, name) or "-") for name in by)
        buckets.setdefault(key, []).append(row)
    stats: list[GroupStats] = []
    for key in sorted(buckets):
        members = buckets[key]
        reviewed = [r for r in members if r.approved is not None]
        approved = sum(1 for r in reviewed if r.approved)
        scores = [r.score for r in members if r.score is not None]
        stats.append(
            GroupStats(
                key=key,
                count=len(members),
                reviewed=len(reviewed),
                approved=approved,
                approval_rate=approved / len(reviewed) if reviewed else None,
                interval=wilson_interval(approved, len(reviewed)) if reviewed else None,
                mean_score=sum(scores) / len(scores) if scores else None,
                scored=len(scores),
            )
        )
    return stats


def table(stats: Sequence[GroupStats], by: Sequence[GroupField] = GROUP_FIELDS) -> str:
    """A plain-text table (Markdown pipes) of the groups, for a CLI or a report file."""
    header = [*by, "count", "reviewed", "approval", "95% CI", "mean score"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in stats:
        rate = "-" if s.approval_rate is None else f"{s.approval_rate:.1%}"
        ci = "-" if s.interval is None else f"{s.interval[0]:.1%} to {s.interval[1]:.1%}"
        score = "-" if s.mean_score is None else f"{s.mean_score:.3f}"
        cells = [*s.key, str(s.count), str(s.reviewed), rate, ci, score]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- chart ----------------------------------------------------------------------------------------

_BACKGROUND = (255, 255, 255)
_INK = (30, 30, 30)
_GRID = (225, 225, 225)
_BAR = (70, 120, 180)
_SCORE = (222, 158, 36)
_ROW = 34
_LABEL_WIDTH = 320
_PLOT_WIDTH = 480
_MARGIN = 16


def chart_png(stats: Sequence[GroupStats], title: str = "Approval rate (95% CI)") -> bytes:
    """A horizontal bar per group: approval rate with its Wilson whiskers, the mean consistency
    score as a diamond on the same 0-1 axis. Groups nobody reviewed get no bar."""
    if not stats:
        raise ValueError("a chart needs at least one group")
    font = ImageFont.load_default(size=13)
    width = _MARGIN * 3 + _LABEL_WIDTH + _PLOT_WIDTH
    height = _MARGIN * 2 + 28 + _ROW * len(stats) + 24
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, _MARGIN), title, fill=_INK, font=font)
    x0 = _MARGIN * 2 + _LABEL_WIDTH
    legend = "bar: approval rate · whiskers: Wilson 95% interval · diamond: mean score"
    draw.text((width - _MARGIN, _MARGIN), legend, fill=_INK, font=font, anchor="ra")
    top = _MARGIN + 28
    bottom = top + _ROW * len(stats)
    for tick in range(0, 11, 2):
        x = x0 + round(_PLOT_WIDTH * tick / 10)
        draw.line((x, top, x, bottom), fill=_GRID)
        draw.text((x, bottom + 4), f"{tick / 10:.1f}", fill=_INK, font=font, anchor="ma")
    for index, s in enumerate(stats):
        y = top + index * _ROW
        label = _fit(draw, f"{s.label()} (n={s.reviewed})", font, _LABEL_WIDTH)
        draw.text((_MARGIN, y + _ROW // 2), label, fill=_INK, font=font, anchor="lm")
        if s.approval_rate is not None and s.interval is not None:
            bar_end = x0 + round(_PLOT_WIDTH * s.approval_rate)
            draw.rectangle((x0, y + 8, max(x0 + 1, bar_end), y + _ROW - 8), fill=_BAR)
            low = x0 + round(_PLOT_WIDTH * s.interval[0])
            high = x0 + round(_PLOT_WIDTH * s.interval[1])
            middle = y + _ROW // 2
            draw.line((low, middle, high, middle), fill=_INK, width=2)
            draw.line((low, middle - 6, low, middle + 6), fill=_INK, width=2)
            draw.line((high, middle - 6, high, middle + 6), fill=_INK, width=2)
        if s.mean_score is not None:
            cx, cy = x0 + round(_PLOT_WIDTH * s.mean_score), y + _ROW // 2
            draw.polygon(((cx, cy - 6), (cx + 6, cy), (cx, cy + 6), (cx - 6, cy)), fill=_SCORE)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _fit(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    width: int,
) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
