"""The webhook store on SQLite and PostgreSQL: what is due, one claimer at a time, fencing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.webhooks import SqlWebhookStore
from caverna.queue.sql import SqlJobStore
from tests.factories import BASE_TIME, job_values

NOW = BASE_TIME + timedelta(days=1)
LEASE = NOW + timedelta(seconds=70)
HOOK = "https://hooks.example.com/h"


@pytest.fixture
async def stores(db_engine: AsyncEngine) -> AsyncIterator[tuple[SqlJobStore, SqlWebhookStore]]:
    jobs = SqlJobStore(db_engine)
    webhooks = SqlWebhookStore(db_engine)
    yield jobs, webhooks
    webhooks.close()
    await jobs.close()


async def insert(jobs: SqlJobStore, rows: list[dict[str, Any]]) -> None:
    # one by one: a multi-row insert takes its columns from the first row
    for row in rows:
        await jobs.insert([row], None)


def with_hook(index: int, status: str, **overrides: Any) -> dict[str, Any]:
    hook = {"callback_url": HOOK, "webhook_status": "pending", "webhook_next_at": BASE_TIME}
    return job_values(index, status=status, **{**hook, **overrides})


async def test_only_pending_webhooks_of_final_jobs_are_due(
    stores: tuple[SqlJobStore, SqlWebhookStore],
) -> None:
    jobs, webhooks = stores
    due = [
        with_hook(1, "completed"),
        with_hook(2, "failed", error_code="provider_error", error_message="down"),
        with_hook(3, "cancelled"),
        with_hook(4, "deleted"),  # claimed so that it can be skipped
        with_hook(5, "completed", webhook_next_at=None),
    ]
    not_due = [
        with_hook(6, "queued"),
        with_hook(7, "processing"),
        with_hook(8, "completed", webhook_status="delivered"),
        with_hook(9, "completed", webhook_next_at=NOW + timedelta(seconds=1)),
        job_values(10, status="completed"),  # no webhook at all
    ]
    await insert(jobs, [*due, *not_due])
    claimed = await webhooks.claim(NOW, LEASE, 50)
    assert {item.image_id for item in claimed} == {values["id"] for values in due}
    failed = next(item for item in claimed if item.job_status == "failed")
    assert (failed.error_code, failed.error_message, failed.url) == ("provider_error", "down", HOOK)
    assert {item.attempt for item in claimed} == {1}
    assert await webhooks.claim(NOW, LEASE, 50) == []  # all leased until LEASE
    # later, the leases have run out (a second attempt) and the retry of row 9 is due (a first)
    taken_over = await webhooks.claim(LEASE, LEASE + timedelta(seconds=70), 50)
    attempts = {item.image_id: item.attempt for item in taken_over}
    assert attempts == {**{values["id"]: 2 for values in due}, not_due[3]["id"]: 1}


async def test_concurrent_claimers_never_share_a_webhook(
    stores: tuple[SqlJobStore, SqlWebhookStore], db_engine: AsyncEngine
) -> None:
    jobs, _ = stores
    rows = [with_hook(i, "completed") for i in range(12)]
    await insert(jobs, rows)
    claimers = [SqlWebhookStore(db_engine) for _ in range(4)]
    try:
        batches = await asyncio.gather(*(c.claim(NOW, LEASE, 5) for c in claimers))
        batches += await asyncio.gather(*(c.claim(NOW, LEASE, 5) for c in claimers))
    finally:
        for claimer in claimers:
            claimer.close()
    claimed = [item.image_id for batch in batches for item in batch]
    assert len(claimed) == len(set(claimed)) == len(rows)


async def test_an_outcome_is_written_only_by_the_latest_claim(
    stores: tuple[SqlJobStore, SqlWebhookStore],
) -> None:
    jobs, webhooks = stores
    values = with_hook(1, "completed")
    await insert(jobs, [values])
    [first] = await webhooks.claim(NOW, LEASE, 5)
    [second] = await webhooks.claim(LEASE, LEASE + timedelta(seconds=70), 5)  # lease ran out
    stale = await webhooks.settle(
        first.image_id, first.attempt, status="delivered", error=None, next_at=None
    )
    assert not stale
    retry_at = LEASE + timedelta(seconds=5)
    assert await webhooks.settle(
        second.image_id, second.attempt, status="pending", error="HTTP 500", next_at=retry_at
    )
    state = await webhooks.get(values["id"])
    assert state is not None
    assert (state.status, state.attempts, state.error, state.next_at) == (
        "pending",
        2,
        "HTTP 500",
        retry_at,
    )
    assert await webhooks.claim(retry_at - timedelta(seconds=1), retry_at, 5) == []
    [third] = await webhooks.claim(retry_at, retry_at + timedelta(seconds=70), 5)
    assert third.attempt == 3


async def test_attaching_a_webhook_to_an_existing_image(
    stores: tuple[SqlJobStore, SqlWebhookStore],
) -> None:
    jobs, webhooks = stores
    plain = job_values(1, status="completed")
    hooked = with_hook(2, "completed", webhook_status="delivered")
    await insert(jobs, [plain, hooked])
    assert await webhooks.attach(plain["id"], HOOK, NOW)
    state = await webhooks.get(plain["id"])
    assert state is not None
    assert (state.url, state.status, state.attempts) == (HOOK, "pending", 0)
    assert await webhooks.attach(hooked["id"], HOOK, NOW)  # the same webhook: nothing to change
    assert not await webhooks.attach(hooked["id"], HOOK + "?other", NOW)
    unchanged = await webhooks.get(hooked["id"])
    assert unchanged is not None
    assert (unchanged.url, unchanged.status) == (HOOK, "delivered")
    assert not await webhooks.attach(uuid.uuid4(), HOOK, NOW)
    assert await webhooks.get(uuid.uuid4()) is None
