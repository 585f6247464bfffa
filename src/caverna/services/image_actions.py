"""What a caller may do to one image: see it, cancel it, delete it, make it again.

Ownership is checked here, once, for every entry point (API, web, CLI): a user sees only their
own images and anyone else's id behaves exactly like an id that does not exist, so ids cannot be
probed. Admins see every image.
"""

from __future__ import annotations

import secrets
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from caverna.domain.accounts import Principal
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.prompting.params import MAX_SEED
from caverna.queue.base import JobStore
from caverna.services.generation import GenerationService, SubmitResult
from caverna.storage.base import ObjectStore, StorageError

ETA_SAMPLE = 50
ETA_CACHE_SECONDS = 15.0


class ImageNotFound(LookupError):
    """No image with this id is visible to the caller."""


class ImageStateConflict(Exception):
    """The image is in a state that does not allow the action (e.g. cancel a completed one)."""

    def __init__(self, job: ImageJob, action: str) -> None:
        super().__init__(f"cannot {action} an image that is {job.status.value}")
        self.job = job
        self.action = action


SeedChoice = Literal["same", "new"] | int


@dataclass(frozen=True, slots=True)
class DeleteResult:
    job: ImageJob
    objects_removed: int


class ImageActions:
    def __init__(
        self,
        *,
        jobs: JobStore,
        generation: GenerationService,
        store: ObjectStore,
        worker_concurrency: int = 4,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs = jobs
        self.generation = generation
        self.store = store
        self.worker_concurrency = max(1, worker_concurrency)
        self._monotonic = monotonic
        self._latency: dict[str, tuple[float, float | None]] = {}

    async def visible(self, principal: Principal, image_id: uuid.UUID) -> ImageJob:
        job = await self.jobs.get(image_id)
        if job is None or not can_see(principal, job):
            raise ImageNotFound(str(image_id))
        return job

    async def cancel(self, principal: Principal, image_id: uuid.UUID) -> ImageJob:
        job = await self.visible(principal, image_id)
        if job.status not in (JobStatus.QUEUED, JobStatus.PROCESSING):
            raise ImageStateConflict(job, "cancel")
        after = await self.jobs.cancel(image_id)
        if after is None or after.status is not JobStatus.CANCELLED:
            # it finished between the read and the cancel
            raise ImageStateConflict(after or job, "cancel")
        return after

    async def delete(self, principal: Principal, image_id: uuid.UUID) -> DeleteResult:
        """Soft-delete the row, then remove its objects (a failed removal is left to the GC)."""
        job = await self.visible(principal, image_id)
        if job.status is JobStatus.DELETED:
            raise ImageNotFound(str(image_id))
        after = await self.jobs.mark_deleted(image_id)
        removed = 0
        for key in (job.storage_key, job.thumbnail_key):
            if key is None:
                continue
            try:
                await self.store.delete(key)
                removed += 1
            except StorageError:
                continue
        return DeleteResult(after or job, removed)

    async def regenerate(
        self,
        principal: Principal,
        image_id: uuid.UUID,
        seed: SeedChoice = "new",
        *,
        in_sequence: bool = False,
        within_quota: bool = True,
    ) -> SubmitResult:
        """The same parameters and provider again: same seed (a fresh job) or another one.

        `in_sequence` makes the new image take the old one's place in its storyboard run;
        without it the run is left as it was, so a caller outside the storyboard cannot
        reshuffle it by accident. `within_quota=False` leaves the owner's quota out (see
        GenerationService.submit).
        """
        job = await self.visible(principal, image_id)
        if job.status is JobStatus.DELETED:
            raise ImageNotFound(str(image_id))
        params = dict(job.params)
        if seed == "new":
            params["seed"] = secrets.randbelow(MAX_SEED + 1)
        elif seed != "same":
            params["seed"] = seed
        keep = in_sequence and job.sequence_id is not None
        return await self.generation.submit(
            job.user_id,
            params,
            provider=job.provider,
            force=True,
            sequence_id=job.sequence_id if keep else None,
            frame_index=job.frame_index if keep else None,
            within_quota=within_quota,
        )

    async def eta_seconds(self, job: ImageJob) -> float | None:
        """Seconds until done, from recent provider latencies; None when nothing is known."""
        if job.terminal:
            return 0.0
        typical = await self._typical_latency(job.provider)
        if typical is None:
            return None
        if job.status is JobStatus.PROCESSING:
            return round(max(0.0, typical * (1.0 - job.progress)), 1)
        ahead = await self.jobs.queued_ahead(job)
        waves = ahead // self.worker_concurrency
        return round(typical * (waves + 1), 1)

    async def _typical_latency(self, provider: str) -> float | None:
        now = self._monotonic()
        cached = self._latency.get(provider)
        if cached is not None and now - cached[0] < ETA_CACHE_SECONDS:
            return cached[1]
        samples = await self.jobs.recent_latencies(provider, ETA_SAMPLE)
        typical = statistics.median(samples) / 1000.0 if samples else None
        self._latency[provider] = (now, typical)
        return typical


def can_see(principal: Principal, job: ImageJob) -> bool:
    return principal.is_admin or job.user_id == principal.user_id
