"""Brand consistency in the pipeline: a report for every completed image, and the re-roll policy.

The pixel checks run inside the derivatives pass, on the decode the thumbnail already paid for:
`ConsistencyPass.analysers_for(job)` hands the pass a picklable analyser holding what the job's
pack, frame, aspect ratio and delivery format expect, and the image process pool runs it. The
near-duplicate check needs other rows, which a worker process cannot read, so it is completed
afterwards on the event loop (`on_analyses`): the hash is compared with the job's sequence
siblings and the user's recent images, and the final report is stored with its score.

A re-roll is an ordinary job submitted through the generation service (quotas and the provider
chain apply); its row is inserted already pointing at the original image, so every attempt stays
visible from it, a crash included.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from caverna.brand.registry import PackRegistry
from caverna.consistency.compliance import FormatExpectation
from caverna.consistency.phash import NEAR_DUPLICATE_BITS, from_hex, near_duplicates
from caverna.consistency.report import (
    CheckResult,
    ConsistencyReport,
    Expectations,
    analyse,
    overall_score,
    overall_status,
)
from caverna.domain.jobs import ImageJob
from caverna.imaging import Analyser, Derivatives
from caverna.prompting.params import MAX_SEED
from caverna.queue.base import ConsistencyStore
from caverna.services.generation import GenerationService, RerollOf
from caverna.services.processing import DerivativesMaker
from caverna.services.quotas import QuotaExceeded

log = logging.getLogger(__name__)

ANALYSER_NAME = "consistency"
# the user's latest images the near-duplicate check compares a new one with
RECENT_IMAGES = 50


@dataclass(frozen=True, slots=True)
class ConsistencyAnalyser:
    """The pixel checks for one job, as a picklable callable for the image process pool."""

    expectations: Expectations

    def __call__(self, image: Image.Image) -> Mapping[str, Any]:
        return analyse(image, self.expectations).model_dump(mode="json")


def expectations_for(packs: PackRegistry, job: ImageJob) -> Expectations:
    """What the job asked for. A pack that is gone (or a frame it no longer has) still leaves
    the format checks: they need nothing from the pack."""
    aspect = job.params.get("aspect_ratio")
    aspect_ratio = aspect if isinstance(aspect, str) else None
    if job.pack_id not in packs.ids():
        return Expectations(
            format=FormatExpectation(aspect_ratio=aspect_ratio, format=job.delivery_format)
        )
    pack = packs.get(job.pack_id)
    frame = job.frame_id if job.frame_id and job.frame_id in pack.frames else None
    return Expectations.for_pack(
        pack, frame=frame, aspect_ratio=aspect_ratio, delivery_format=job.delivery_format
    )


def with_comparisons(
    report: ConsistencyReport,
    others: Mapping[str, str],
    threshold: int = NEAR_DUPLICATE_BITS,
) -> ConsistencyReport:
    """The report with its near-duplicate check made against `others` ({id: phash}), and the
    overall score and status recomputed."""
    hashed = from_hex(report.phash)
    found = near_duplicates(
        hashed, {key: from_hex(value) for key, value in others.items()}, threshold
    )
    if others:
        check = CheckResult(
            name="duplicates",
            status="warn" if found else "pass",
            score=0.0 if found else 1.0,
            measured={
                "compared": len(others),
                "near_duplicates": [{"id": key, "distance": d} for key, d in found],
            },
            expected={"threshold_bits": threshold},
            notes=tuple(f"near-duplicate of {key} ({d} of 64 bits differ)" for key, d in found),
        )
    else:
        check = CheckResult(
            name="duplicates", status="skipped", notes=("no other images to compare with",)
        )
    checks = tuple(check if c.name == "duplicates" else c for c in report.checks)
    if not any(c.name == "duplicates" for c in checks):
        checks = (*checks, check)
    return report.model_copy(
        update={
            "checks": checks,
            "overall_score": overall_score(checks),
            "status": overall_status(checks),
        }
    )


@dataclass(frozen=True, slots=True)
class RerollPolicy:
    """Below `below` an image is made again with a new seed, at most `max_attempts` times and
    while the re-rolls of one original image have cost less than `budget_usd`."""

    below: float | None = None
    max_attempts: int = 2
    budget_usd: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.below is not None and self.max_attempts > 0


@dataclass(frozen=True, slots=True)
class RerollDecision:
    """Why a completed image was or was not re-rolled (logged; returned for callers and tests)."""

    action: str  # "rerolled", "none", "stopped"
    reason: str
    new_job: uuid.UUID | None = None


def reroll_seed(root: uuid.UUID, attempt: int, original: int | None) -> int:
    """A new seed for attempt `attempt` of re-rolling `root`: the same on every machine and
    after a crash, and never the original seed."""
    digest = hashlib.sha256(f"{root}:{attempt}".encode()).digest()
    seed = int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)
    return (seed + 1) % (MAX_SEED + 1) if seed == original else seed


class Rerolls:
    """The re-roll policy: decides after each report, and submits through the service."""

    def __init__(
        self,
        *,
        store: ConsistencyStore,
        generation: GenerationService,
        policy: RerollPolicy,
    ) -> None:
        self.store = store
        self.generation = generation
        self.policy = policy

    async def after_report(self, job: ImageJob, score: float | None) -> RerollDecision:
        policy = self.policy
        if not policy.enabled or policy.below is None:
            return RerollDecision("none", "the re-roll policy is off")
        if score is None or score >= policy.below:
            return RerollDecision("none", "the score is at or above the threshold")
        root = job.reroll_of or job.id
        attempts = await self.store.rerolls(root)
        # only the newest attempt may ask for another: a report made again later (catch-up, an
        # on-demand thumbnail) of the original or an older attempt must not fork the chain
        newest = attempts[-1].id if attempts else root
        if job.id != newest:
            return RerollDecision("none", "a later attempt exists")
        if len(attempts) >= policy.max_attempts:
            return RerollDecision("stopped", f"{len(attempts)} re-rolls made, the maximum")
        spent = sum(a.cost_usd or 0.0 for a in attempts)
        estimate = job.cost_usd or 0.0
        if spent + estimate > policy.budget_usd + 1e-9:
            return RerollDecision(
                "stopped",
                f"another attempt (about {estimate:.4f} USD) would take the re-rolls past the"
                f" budget of {policy.budget_usd:.4f} USD ({spent:.4f} spent)",
            )
        attempt = len(attempts) + 1
        params = dict(job.params)
        params["seed"] = reroll_seed(root, attempt, job.seed)
        try:
            # the user's quota is held by the insert itself (the generation service's quotas)
            submitted = await self.generation.submit(
                job.user_id,
                params,
                provider=job.provider,
                force=True,
                sequence_id=job.sequence_id,
                frame_index=job.frame_index,
                reroll=RerollOf(root, attempt),
            )
        except QuotaExceeded as exc:
            return RerollDecision("stopped", f"the user's quota is used up ({exc})")
        return RerollDecision("rerolled", f"attempt {attempt}", submitted.job.id)


class ConsistencyPass:
    """What the derivatives pass needs: the analyser per job, and the step that completes and
    stores the report (then applies the re-roll policy)."""

    def __init__(
        self,
        *,
        store: ConsistencyStore,
        packs: PackRegistry,
        rerolls: Rerolls | None = None,
        recent: int = RECENT_IMAGES,
    ) -> None:
        self.store = store
        self.packs = packs
        self.rerolls = rerolls
        self.recent = recent
        self.decisions: list[tuple[uuid.UUID, RerollDecision]] = []

    def attach(self, maker: DerivativesMaker) -> None:
        maker.analysers_for = self.analysers_for
        maker.on_analyses = self.on_analyses

    def analysers_for(self, job: ImageJob) -> Sequence[Analyser]:
        try:
            return (
                Analyser(ANALYSER_NAME, ConsistencyAnalyser(expectations_for(self.packs, job))),
            )
        except Exception:  # a bad expectation must cost the report, never the thumbnail
            log.exception("consistency: no expectations for the image")
            return ()

    async def on_analyses(self, job: ImageJob, derived: Derivatives) -> None:
        data = derived.analyses.get(ANALYSER_NAME)
        if data is None:
            error = derived.errors.get(ANALYSER_NAME)
            if error is not None:
                log.warning("consistency analysis failed", extra={"error_message": error})
            return
        try:
            report = await self.complete(job, ConsistencyReport.model_validate(dict(data)))
        except Exception:  # the thumbnail is made; a report that failed is logged, not retried
            log.exception("consistency: the report could not be stored")
            return
        if report is None or self.rerolls is None:
            return
        try:
            decision = await self.rerolls.after_report(job, report.overall_score)
        except Exception:
            log.exception("consistency: the re-roll could not be submitted")
            return
        self.decisions.append((job.id, decision))
        if decision.action != "none":
            log.info(
                "re-roll policy",
                extra={
                    "action": decision.action,
                    "reason": decision.reason,
                    "new_image_id": str(decision.new_job) if decision.new_job else None,
                },
            )

    async def complete(self, job: ImageJob, report: ConsistencyReport) -> ConsistencyReport | None:
        """Compare with the neighbours and store; None when the image is gone meanwhile."""
        neighbours = await self.store.phash_neighbours(job.user_id, job.sequence_id, self.recent)
        others = {
            str(row["id"]): str(row["phash"]) for row in neighbours if not _same_lineage(job, row)
        }
        final = with_comparisons(report, others)
        stored = await self.store.set_consistency(
            job.id, final.model_dump(mode="json"), final.overall_score, final.phash
        )
        return final if stored else None


def _same_lineage(job: ImageJob, row: Mapping[str, Any]) -> bool:
    """Rows that are this image, its re-roll family, or an earlier take of the same storyboard
    frame: each replaces the other on purpose, so looking alike is no finding."""
    if row["id"] == job.id:
        return True
    root = job.reroll_of or job.id
    if row["id"] == root or row["reroll_of"] == root:
        return True
    return (
        job.sequence_id is not None
        and row["sequence_id"] == job.sequence_id
        and row["frame_index"] == job.frame_index
    )
