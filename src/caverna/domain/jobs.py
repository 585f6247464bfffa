"""The image job: its states and the moves between them.

The database row is the job; these rules say which writes are legal so every path (worker,
sweeper, cancel, API) agrees on them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DELETED = "deleted"


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.DELETED}
)

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.CANCELLED, JobStatus.DELETED}),
    # back to QUEUED: a retry after a retryable failure, or a lease that expired
    JobStatus.PROCESSING: frozenset(
        {JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.COMPLETED: frozenset({JobStatus.DELETED}),
    JobStatus.FAILED: frozenset({JobStatus.DELETED}),
    JobStatus.CANCELLED: frozenset({JobStatus.DELETED}),
    JobStatus.DELETED: frozenset(),
}


def can_move(current: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[current]


class JobErrorCode(StrEnum):
    """Stable codes stored on failed jobs."""

    PROVIDER_ERROR = "provider_error"
    INVALID_REQUEST = "invalid_request"
    CONTENT_BLOCKED = "content_blocked"
    IMAGE_REJECTED = "image_rejected"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    INTERNAL = "internal_error"


@dataclass(frozen=True, slots=True)
class ImageJob:
    """One image request and everything known about it: the row of the queue, as plain data."""

    id: uuid.UUID
    user_id: str
    status: JobStatus
    params: dict[str, Any]
    params_hash: str
    pack_id: str
    pack_version: str
    template_version: str
    sequence_id: uuid.UUID | None
    frame_id: str | None
    frame_index: int | None
    pose: str
    outfit: str
    footwear: str
    props: str
    provider: str
    model: str | None
    seed: int | None
    delivery_format: str
    prompt: str | None
    negative_prompt: str | None
    progress: float
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    next_attempt_at: datetime | None
    error_code: str | None
    error_message: str | None
    storage_key: str | None
    thumbnail_key: str | None
    content_type: str | None
    width: int | None
    height: int | None
    bytes: int | None
    sha256: str | None
    cost_usd: float | None
    provider_latency_ms: float | None
    attempt_log: list[dict[str, Any]] | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    deleted_at: datetime | None
    # brand consistency, written by the derivatives pass, and the re-roll lineage
    consistency: dict[str, Any] | None = None
    consistency_score: float | None = None
    phash: str | None = None
    variant: str | None = None
    reroll_of: uuid.UUID | None = None
    reroll_attempt: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class CompletedImage:
    """What a worker learned by finishing a job; written only while it holds the lease."""

    model: str
    prompt: str
    negative_prompt: str | None
    storage_key: str
    thumbnail_key: str
    content_type: str
    width: int
    height: int
    bytes: int
    sha256: str
    cost_usd: float
    provider_latency_ms: float
    seed: int | None
    provider: str
    attempt_log: list[dict[str, Any]]
    variant: str | None = None  # the pack's prompt variant (A/B) the image was made with


@dataclass(frozen=True, slots=True)
class SweepResult:
    requeued: int
    failed: int


@dataclass(frozen=True, slots=True)
class SequenceRun:
    """One request for a whole storyboard: which one, for whom, with which seed and provider."""

    id: uuid.UUID
    user_id: str
    pack_id: str
    sequence_key: str
    provider: str
    seed: int | None
    created_at: datetime
