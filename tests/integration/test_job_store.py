"""The job store against real SQLite and PostgreSQL: claims, leases, sweeps, wake-ups."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.bootstrap import HEAD_REVISION
from caverna.db.engine import create_engine
from caverna.db.migrate import current_revision, upgrade
from caverna.db.models import Base
from caverna.domain.jobs import JobStatus
from caverna.queue.sql import SqlJobStore
from tests.factories import FakeClock, completed, job_values

LEASE = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(db_engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[SqlJobStore]:
    job_store = SqlJobStore(db_engine, clock=clock)
    yield job_store
    await job_store.close()


async def test_migrations_match_the_models(db_engine: AsyncEngine, database_url: str) -> None:
    def diff(sync_connection: object) -> list[object]:
        context = MigrationContext.configure(sync_connection)  # type: ignore[arg-type]
        changes = compare_metadata(context, Base.metadata)
        # SQLite cannot reflect expression indexes (created_at DESC), so they compare unequal
        expression_indexes = {
            index.name
            for index in Base.metadata.tables["generated_images"].indexes
            if any(not hasattr(e, "name") for e in index.expressions)
        }
        return [
            c
            for c in changes
            if not (
                database_url.startswith("sqlite")
                and isinstance(c, tuple)
                and c[0] in {"add_index", "remove_index"}
                and c[1].name in expression_indexes
            )
        ]

    async with db_engine.connect() as connection:
        assert await connection.run_sync(diff) == []
    assert await current_revision(db_engine) == HEAD_REVISION
    await upgrade(database_url)  # a second upgrade is a no-op
    assert await current_revision(db_engine) == HEAD_REVISION


async def test_insert_and_read_back(store: SqlJobStore) -> None:
    values = job_values(1, params={"pack": "capitao-caverna", "props": ["torch", "chisel"]})
    await store.insert([values], None)
    job = await store.get(values["id"])
    assert job is not None
    assert job.status is JobStatus.QUEUED
    assert job.params == values["params"]
    assert job.created_at == values["created_at"]
    assert job.created_at.tzinfo is not None
    assert await store.get(uuid.uuid4()) is None


async def test_claim_takes_the_oldest_and_sets_the_lease(
    store: SqlJobStore, clock: FakeClock
) -> None:
    jobs = [job_values(i) for i in (3, 1, 2)]
    await store.insert(jobs, None)
    first = await store.claim("w1", LEASE)
    assert first is not None
    assert first.seed == 1
    assert first.status is JobStatus.PROCESSING
    assert first.lease_owner == "w1"
    assert first.attempts == 1
    assert first.lease_expires_at is not None
    assert first.lease_expires_at == clock.now + timedelta(seconds=LEASE)
    second = await store.claim("w2", LEASE)
    assert second is not None
    assert second.seed == 2
    assert (await store.claim("w3", LEASE)) is not None
    assert await store.claim("w4", LEASE) is None


async def test_claim_respects_next_attempt_and_providers(
    store: SqlJobStore, clock: FakeClock
) -> None:
    later = clock.now + timedelta(seconds=60)
    await store.insert(
        [job_values(1, next_attempt_at=later), job_values(2, provider="comfyui")], None
    )
    assert await store.claim("w", LEASE, providers=["preview"]) is None
    assert await store.claim("w", LEASE, providers=[]) is None
    job = await store.claim("w", LEASE, providers=["comfyui"])
    assert job is not None
    assert job.provider == "comfyui"
    clock.advance(61)
    job = await store.claim("w", LEASE)
    assert job is not None
    assert job.seed == 1


async def test_only_the_lease_holder_writes(store: SqlJobStore, clock: FakeClock) -> None:
    await store.insert([job_values(1)], None)
    job = await store.claim("w1", LEASE)
    assert job is not None
    assert not await store.renew(job.id, "intruder", LEASE)
    assert not await store.report_progress(job.id, "intruder", 0.5)
    assert await store.report_progress(job.id, "w1", 0.5)
    assert await store.renew(job.id, "w1", LEASE)
    assert not await store.complete(job.id, "intruder", completed())
    assert await store.complete(job.id, "w1", completed())
    done = await store.get(job.id)
    assert done is not None
    assert done.status is JobStatus.COMPLETED
    assert done.progress == 1.0
    assert done.lease_owner is None
    assert done.storage_key == "images/2026/11/x.webp"
    assert done.attempt_log == [{"provider": "preview", "outcome": "ok"}]
    assert not await store.complete(job.id, "w1", completed())  # never twice


async def test_sweep_requeues_expired_leases_and_the_old_owner_loses(
    store: SqlJobStore, clock: FakeClock
) -> None:
    await store.insert([job_values(1)], None)
    job = await store.claim("w1", LEASE)
    assert job is not None
    clock.advance(LEASE - 1)
    assert (await store.sweep()).requeued == 0
    clock.advance(2)
    result = await store.sweep()
    assert (result.requeued, result.failed) == (1, 0)
    again = await store.claim("w2", LEASE)
    assert again is not None
    assert again.id == job.id
    assert again.attempts == 2
    assert not await store.complete(job.id, "w1", completed())
    assert await store.complete(job.id, "w2", completed())


async def test_sweep_fails_jobs_out_of_attempts(store: SqlJobStore, clock: FakeClock) -> None:
    await store.insert([job_values(1, max_attempts=1)], None)
    job = await store.claim("w1", LEASE)
    assert job is not None
    clock.advance(LEASE + 1)
    assert (await store.sweep()).failed == 1
    failed = await store.get(job.id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.error_code == "attempts_exhausted"


async def test_retry_later_and_fail(store: SqlJobStore, clock: FakeClock) -> None:
    await store.insert([job_values(1), job_values(2)], None)
    job = await store.claim("w1", LEASE)
    assert job is not None
    at = clock.now + timedelta(seconds=10)
    assert await store.retry_later(job.id, "w1", "unavailable", "try again", at)
    other = await store.claim("w1", LEASE)
    assert other is not None
    assert other.id != job.id  # the retried one is not runnable yet
    assert await store.fail(other.id, "w1", "invalid_request", "bad")
    failed = await store.get(other.id)
    assert failed is not None
    assert (failed.status, failed.error_code) == (JobStatus.FAILED, "invalid_request")
    clock.advance(11)
    retried = await store.claim("w1", LEASE)
    assert retried is not None
    assert retried.id == job.id
    assert retried.error_code is None


async def test_cancel_queued_and_running(store: SqlJobStore) -> None:
    queued, running = job_values(1), job_values(2)
    await store.insert([queued, running], None)
    claimed = await store.claim("w1", LEASE)  # takes `queued` (older)
    assert claimed is not None
    cancelled = await store.cancel(running["id"])
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    cancelled_running = await store.cancel(claimed.id)
    assert cancelled_running is not None
    assert cancelled_running.status is JobStatus.CANCELLED
    assert not await store.complete(claimed.id, "w1", completed())
    assert not await store.renew(claimed.id, "w1", LEASE)
    assert await store.counts() == {"cancelled": 2}


@pytest.mark.parametrize(("jobs", "claimers"), [(50, 50), (20, 50)])
async def test_concurrent_claims_take_each_job_exactly_once(
    database_url: str, jobs: int, claimers: int
) -> None:
    engine = create_engine(database_url, pool_size=25)
    store = SqlJobStore(engine)
    try:
        await store.insert([job_values(i) for i in range(jobs)], None)
        results = await asyncio.gather(*(store.claim(f"w{i}", LEASE) for i in range(claimers)))
        claimed = [job.id for job in results if job is not None]
        assert len(claimed) == jobs
        assert len(set(claimed)) == jobs
        assert await store.counts() == {"processing": jobs}
    finally:
        await store.close()
        await engine.dispose()


async def test_insert_wakes_a_waiting_worker_in_process(store: SqlJobStore) -> None:
    waiter = asyncio.create_task(store.wait_for_work(10))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await store.insert([job_values(1)], None)
    await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - started < 2


async def test_postgres_notify_wakes_another_process_store(postgres_database: str) -> None:
    engine_a, engine_b = create_engine(postgres_database), create_engine(postgres_database)
    producer, consumer = SqlJobStore(engine_a), SqlJobStore(engine_b)
    try:
        await consumer.wait_for_work(0.01)  # starts LISTEN
        waiter = asyncio.create_task(consumer.wait_for_work(10))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await producer.insert([job_values(1, id=uuid.uuid4())], None)
        await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - started < 2
    finally:
        for job_store, engine in ((producer, engine_a), (consumer, engine_b)):
            await job_store.close()
            await engine.dispose()
