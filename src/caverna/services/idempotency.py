"""Idempotency-Key for generate requests: a retried POST never makes a second image.

The first request with a key reserves it (a row keyed by user and key) before any work, so two
concurrent retries cannot both submit: the second sees the reservation and is told to retry
(409) until the first settles it with the image id; after that, replays return the same image.
The same key with a different body is a client bug and is refused. Keys live for a day.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from caverna.domain.jobs import ImageJob

KEY_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Reservation:
    request_hash: str
    image_id: uuid.UUID | None
    created_at: datetime


class IdempotencyStore(Protocol):
    async def reserve(
        self, user_id: str, key: str, request_hash: str, now: datetime, stale_before: datetime
    ) -> Reservation | None:
        """Take the key (None) or return the live reservation someone else holds."""

    async def settle(self, user_id: str, key: str, image_id: uuid.UUID) -> None:
        """Record the image the reserved request produced."""

    async def release(self, user_id: str, key: str) -> None:
        """Forget a reservation whose request failed, so a corrected retry can use the key."""


class IdempotencyKeyReused(Exception):
    """The key was used before with a different request body."""


class IdempotencyInProgress(Exception):
    """The first request with this key is still being handled."""


def request_hash(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Outcome:
    job: ImageJob
    reused: bool
    replayed: bool


class Idempotency:
    def __init__(self, store: IdempotencyStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    async def run(
        self,
        user_id: str,
        key: str,
        body: Mapping[str, Any],
        submit: Callable[[], Awaitable[tuple[ImageJob, bool]]],
        load: Callable[[uuid.UUID], Awaitable[ImageJob | None]],
    ) -> Outcome:
        digest = request_hash(body)
        now = self.clock()
        held = await self.store.reserve(user_id, key, digest, now, now - KEY_LIFETIME)
        if held is not None:
            if held.request_hash != digest:
                raise IdempotencyKeyReused(key)
            if held.image_id is None:
                raise IdempotencyInProgress(key)
            job = await load(held.image_id)
            if job is not None:
                return Outcome(job, reused=True, replayed=True)
            raise IdempotencyInProgress(key)  # pragma: no cover - settled rows point at jobs
        try:
            job, reused = await submit()
        except BaseException:
            await self.store.release(user_id, key)
            raise
        await self.store.settle(user_id, key, job.id)
        return Outcome(job, reused=reused, replayed=False)
