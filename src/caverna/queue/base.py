"""The job store: the image rows are both the record and the queue.

A worker claims a row under a lease that it renews while it waits on the provider; the sweeper
returns rows whose lease expired; completion is conditional on still holding the lease. Every
write that depends on ownership says so in its name and returns whether it happened.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from caverna.domain.jobs import CompletedImage, ImageJob, SequenceRun, SweepResult

# derivatives_status of a completed image (NULL: completed before the pass existed)
DERIVATIVES_PENDING = "pending"
DERIVATIVES_DONE = "done"
DERIVATIVES_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class UsageGate:
    """A limit the insert itself holds: `admit(images, cost)` is called with the user's image
    count since `images_since` and spend (USD) since `cost_since` (None where that window is
    not read), inside the insert's transaction, and raises to refuse it."""

    user_id: str
    images_since: datetime | None
    cost_since: datetime | None
    admit: Callable[[int | None, float | None], None]


class JobStore(Protocol):
    async def insert(
        self,
        jobs: Sequence[dict[str, Any]],
        sequence: dict[str, Any] | None,
        gate: UsageGate | None = None,
    ) -> None:
        """Insert queued jobs (and their sequence) in one transaction, then wake workers.

        With a `gate`, the transaction first serialises the gate's user against every other
        gated insert of that user (in any process), reads the usage and lets the gate refuse:
        whatever `admit` raises propagates and nothing is inserted.
        """

    async def get(self, job_id: uuid.UUID) -> ImageJob | None:
        """One job, whatever its status."""

    async def find_reusable(
        self,
        user_id: str,
        params_hash: str,
        template_version: str,
        provider: str,
        seed: int | None,
    ) -> ImageJob | None:
        """The same user's job for the same request, completed or still on its way."""

    async def for_sequence(self, sequence_id: uuid.UUID) -> list[ImageJob]:
        """The jobs of a sequence in frame order."""

    async def claim(
        self, worker_id: str, lease_seconds: float, providers: Sequence[str] | None = None
    ) -> ImageJob | None:
        """Take the oldest runnable queued job, atomically, or None."""

    async def renew(self, job_id: uuid.UUID, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the worker no longer owns the job."""

    async def report_progress(self, job_id: uuid.UUID, worker_id: str, progress: float) -> bool:
        """Write progress (0..1) while owning the job."""

    async def complete(self, job_id: uuid.UUID, worker_id: str, result: CompletedImage) -> bool:
        """Mark completed only if the lease is still held."""

    async def pending_derivatives(self, limit: int) -> list[ImageJob]:
        """Completed jobs whose derivatives (thumbnail, analyses) are not made yet, oldest
        completion first: the backlog of the post-completion pass, crashes included."""

    async def finish_derivatives(self, job_id: uuid.UUID, status: str) -> bool:
        """Record the derivatives pass's outcome (`done` or `failed`); False when the job is no
        longer completed (deleted meanwhile), so its new objects can be removed."""

    async def retry_later(
        self,
        job_id: uuid.UUID,
        worker_id: str,
        code: str,
        message: str,
        at: datetime,
        attempt_log: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Give the job back to the queue, runnable again at `at`."""

    async def fail(
        self,
        job_id: uuid.UUID,
        worker_id: str,
        code: str,
        message: str,
        attempt_log: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Mark failed for good, with a stable code."""

    async def cancel(self, job_id: uuid.UUID) -> ImageJob | None:
        """Cancel a queued or running job; returns the job as it is afterwards."""

    async def mark_deleted(self, job_id: uuid.UUID) -> ImageJob | None:
        """Soft-delete whatever the status; returns the job as it is afterwards."""

    async def recent_latencies(self, provider: str, limit: int) -> list[float]:
        """Provider latencies (ms) of the latest completed jobs of a provider, newest first."""

    async def usage(self, user_id: str, since: datetime) -> tuple[int, float]:
        """How many images a user asked for since `since`, and what they cost (USD)."""

    async def breakdown(self) -> dict[str, list[dict[str, Any]]]:
        """Images and cost by provider and status, and by user."""

    async def set_review(
        self,
        job_id: uuid.UUID,
        status: str,
        reason: str | None,
        note: str | None,
        reviewer: str,
    ) -> bool:
        """Approve or reject a completed image, with a reason and a note."""

    async def review(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        """The image's review (status, reason, note, reviewed_by, reviewed_at), if any."""

    async def queued_ahead(self, job: ImageJob) -> int:
        """Runnable jobs ahead of a queued one."""

    async def sweep(self) -> SweepResult:
        """Requeue jobs whose lease expired; fail those out of attempts."""

    async def wait_for_work(self, timeout: float) -> None:
        """Return when new work may be there, or after `timeout` seconds."""

    async def counts(self) -> dict[str, int]:
        """Jobs per status."""

    async def recent_by_status(self, status: str, limit: int) -> list[ImageJob]:
        """Jobs in one status across every user, newest first, at most `limit` of them."""

    async def recent_sequences(self, user_id: str, limit: int) -> list[SequenceRun]:
        """A user's latest storyboard runs, newest first."""

    async def sequence_run(self, sequence_id: uuid.UUID) -> SequenceRun | None:
        """One storyboard run, whoever asked for it."""

    async def backlog(self) -> list[QueueBacklog]:
        """Queued and processing jobs per provider, and since when the oldest queued job has
        been runnable: the queue's shape for metrics, in one cheap grouped read."""


# the columns an approval-analytics group is keyed by, in order
TEMPLATE_GROUP_KEYS = ("template_version", "provider", "pose", "frame", "variant")


class ConsistencyStore(Protocol):
    """The brand consistency columns of the image rows (report, score, hash, re-roll lineage)."""

    async def set_consistency(
        self, job_id: uuid.UUID, report: dict[str, Any], score: float | None, phash: str
    ) -> bool:
        """Store an image's consistency report; False when the image is no longer completed."""

    async def phash_neighbours(
        self, user_id: str, sequence_id: uuid.UUID | None, recent: int
    ) -> list[dict[str, Any]]:
        """Completed images with a perceptual hash: the sequence's and the user's `recent`
        latest (id, phash, sequence_id, frame_index, reroll_of)."""

    async def set_reroll(self, job_id: uuid.UUID, root_id: uuid.UUID, attempt: int) -> bool:
        """Record that `job_id` is re-roll number `attempt` of `root_id`."""

    async def rerolls(self, root_id: uuid.UUID) -> list[ImageJob]:
        """Every re-roll of an image, first attempt first."""

    async def template_groups(self) -> list[dict[str, Any]]:
        """Completed images counted per TEMPLATE_GROUP_KEYS: count, reviewed, approved, the
        sum and count of consistency scores."""


@dataclass(frozen=True, slots=True)
class QueueBacklog:
    """One provider's live jobs. `oldest_runnable_at` is the earliest moment a queued job could
    have been claimed (created, or its retry came due); None when no queued job is runnable."""

    provider: str
    queued: int
    processing: int
    oldest_runnable_at: datetime | None
