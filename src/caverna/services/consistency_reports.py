"""Reports over stored consistency reports: a storyboard's continuity (JSON and contact sheet),
approval analytics per template, provider, pose, frame and variant, and an image's re-rolls.

The API and the CLI both call these, so a number means the same thing wherever it is read.
Everything is computed from the rows: the pixel work was done once, by the derivatives pass.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from caverna.brand.registry import PackRegistry
from caverna.consistency.analytics import (
    GROUP_FIELDS,
    GroupField,
    GroupStats,
    chart_png,
    wilson_interval,
)
from caverna.consistency.continuity import ContinuityReport, continuity
from caverna.consistency.report import ConsistencyReport
from caverna.consistency.sheet import SheetFrame, continuity_sheet
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.queue.base import ConsistencyStore
from caverna.services.consistency import RerollPolicy
from caverna.services.generation import current_frames
from caverna.storage.base import ObjectNotFound, ObjectStore

# Why an image was rejected: a fixed list, so the analytics can count reasons. "text_space" is a
# frame whose room for the overlay text is covered; "artifacts" stays for reviews made before the
# list grew.
ReviewVerdict = Literal["approved", "rejected"]
ReviewReason = Literal[
    "off_model",
    "wrong_palette",
    "wrong_lighting",
    "anatomy",
    "composition",
    "text_space",
    "duplicate",
    "artifacts",
    "other",
]
REVIEW_VERDICTS: tuple[str, ...] = get_args(ReviewVerdict)
REVIEW_REASONS: tuple[str, ...] = get_args(ReviewReason)
NOTE_MAX = 2000


@dataclass(frozen=True, slots=True)
class FrameSummary:
    frame_id: str
    image_id: uuid.UUID
    title: str
    status: str
    report: ConsistencyReport | None


@dataclass(frozen=True, slots=True)
class SequenceReport:
    sequence_id: uuid.UUID
    frames: tuple[FrameSummary, ...]
    continuity: ContinuityReport | None  # None until at least one frame has a report

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence_id": str(self.sequence_id),
            "frames": [
                {
                    "frame_id": f.frame_id,
                    "image_id": str(f.image_id),
                    "title": f.title,
                    "status": f.status,
                    "score": f.report.overall_score if f.report else None,
                    "consistency_status": f.report.status if f.report else None,
                    "palette": f.report.score_of("palette") if f.report else None,
                    "lighting": f.report.score_of("lighting") if f.report else None,
                    "brightness": f.report.brightness if f.report else None,
                    "breaks": bool(self.continuity and f.frame_id in self.continuity.breaks),
                }
                for f in self.frames
            ],
            "analysed": sum(1 for f in self.frames if f.report is not None),
            "continuity": self.continuity.to_dict() if self.continuity else None,
        }


def stored_report(job: ImageJob) -> ConsistencyReport | None:
    """The image's report, or None when it has none (or one this version cannot read)."""
    if job.consistency is None:
        return None
    try:
        return ConsistencyReport.model_validate(job.consistency)
    except ValueError:
        return None


def _title(packs: PackRegistry, job: ImageJob, number: int, locale: str) -> str:
    frame = job.frame_id or f"frame {number}"
    if job.pack_id in packs.ids() and job.frame_id:
        entry = packs.get(job.pack_id).frames.get(job.frame_id)
        if entry is not None:
            return entry.frame.title.get("pt-BR" if locale == "pt-BR" else "en")
    return frame


def sequence_report(
    sequence_id: uuid.UUID, jobs: Sequence[ImageJob], packs: PackRegistry, locale: str = "en"
) -> SequenceReport:
    """Continuity over the run's current frames (a remade frame counts as its replacement)."""
    frames = tuple(
        FrameSummary(
            frame_id=job.frame_id or f"#{number}",
            image_id=job.id,
            title=_title(packs, job, number, locale),
            status=job.status.value,
            report=stored_report(job) if job.status is JobStatus.COMPLETED else None,
        )
        for number, job in enumerate(current_frames(jobs), start=1)
    )
    analysed = [(f.frame_id, f.report) for f in frames if f.report is not None]
    return SequenceReport(sequence_id, frames, continuity(analysed) if analysed else None)


async def sequence_sheet(
    report: SequenceReport, jobs: Sequence[ImageJob], store: ObjectStore
) -> bytes:
    """The contact sheet PNG: every frame with its scores underneath, breaks outlined."""
    by_id = {job.id: job for job in jobs}

    async def image(frame: FrameSummary) -> bytes | None:
        job = by_id.get(frame.image_id)
        if job is None or job.status is not JobStatus.COMPLETED:
            return None
        # the 256-pixel thumbnail is what the sheet's cells show; the original is the fallback
        for key in (job.thumbnail_key, job.storage_key):
            if key is None:
                continue
            try:
                return await store.get(key)
            except ObjectNotFound:
                continue
        return None

    images = await asyncio.gather(*(image(frame) for frame in report.frames))
    sheet = [
        SheetFrame(frame.frame_id, frame.title, data, frame.report)
        for frame, data in zip(report.frames, images, strict=True)
    ]
    return await asyncio.to_thread(continuity_sheet, sheet, report.continuity)


# -- approval analytics -------------------------------------------------------------------------


def parse_group_by(text: str | None) -> tuple[GroupField, ...]:
    """`template_version,provider` -> the fields; ValueError names the allowed ones."""
    if not text:
        return GROUP_FIELDS
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in wanted if part not in GROUP_FIELDS]
    if unknown or not wanted or len(set(wanted)) != len(wanted):
        raise ValueError(
            f"group by one or more of {', '.join(GROUP_FIELDS)} (each once); got {text[:100]!r}"
        )
    return tuple(name for name in GROUP_FIELDS if name in wanted)


async def template_report(
    store: ConsistencyStore, by: Sequence[GroupField] = GROUP_FIELDS
) -> list[GroupStats]:
    """Approval rate (Wilson 95%) and mean score per group, from the database's counts."""
    merged: dict[tuple[str, ...], list[float]] = {}
    for row in await store.template_groups():
        key = tuple(str(row[name] or "-") for name in by)
        totals = merged.setdefault(key, [0.0, 0.0, 0.0, 0.0, 0.0])
        totals[0] += int(row["count"])
        totals[1] += int(row["reviewed"])
        totals[2] += int(row["approved"] or 0)
        totals[3] += float(row["score_sum"] or 0.0)
        totals[4] += int(row["scored"])
    stats = []
    for key in sorted(merged):
        count, reviewed, approved, score_sum, scored = merged[key]
        stats.append(
            GroupStats(
                key=key,
                count=int(count),
                reviewed=int(reviewed),
                approved=int(approved),
                approval_rate=approved / reviewed if reviewed else None,
                interval=wilson_interval(int(approved), int(reviewed)) if reviewed else None,
                mean_score=round(score_sum / scored, 4) if scored else None,
                scored=int(scored),
            )
        )
    return stats


def group_dict(stats: GroupStats, by: Sequence[GroupField]) -> dict[str, Any]:
    return {
        **dict(zip(by, stats.key, strict=True)),
        "count": stats.count,
        "reviewed": stats.reviewed,
        "approved": stats.approved,
        "approval_rate": None if stats.approval_rate is None else round(stats.approval_rate, 4),
        "interval": None if stats.interval is None else [round(v, 4) for v in stats.interval],
        "mean_score": stats.mean_score,
        "scored": stats.scored,
    }


async def template_chart(stats: Sequence[GroupStats]) -> bytes:
    """The chart PNG; with no image yet, one empty row says so (an empty chart is not an error)."""
    rows = list(stats) or [GroupStats(("no images yet",), 0, 0, 0, None, None, None, 0)]
    return await asyncio.to_thread(chart_png, rows)


# -- re-rolls -----------------------------------------------------------------------------------


async def reroll_summary(
    store: ConsistencyStore, original: ImageJob, policy: RerollPolicy
) -> dict[str, Any]:
    """The original image, every re-roll of it with its score and cost, and the policy."""
    attempts = await store.rerolls(original.id)
    rows = [
        {
            "image_id": str(a.id),
            "attempt": a.reroll_attempt,
            "status": a.status.value,
            "seed": a.seed,
            "score": a.consistency_score,
            "cost_usd": a.cost_usd,
        }
        for a in attempts
    ]
    scored = [a for a in (original, *attempts) if a.consistency_score is not None]
    best = max(scored, key=lambda a: a.consistency_score or 0.0) if scored else None
    return {
        "original_id": str(original.id),
        "original_score": original.consistency_score,
        "attempts": rows,
        "spent_usd": round(sum(a.cost_usd or 0.0 for a in attempts), 6),
        "best_image_id": str(best.id) if best else None,
        "policy": {
            "enabled": policy.enabled,
            "below": policy.below,
            "max_attempts": policy.max_attempts,
            "budget_usd": policy.budget_usd,
        },
    }
