"""Point reads (one row by key, compiled once; on SQLite run on the event loop): the same rows as
SQLAlchemy reads them, on both databases, never blocked by a writer, and a fallback that works."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.engine import TransactionRunner
from caverna.db.point_reads import PointRead
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.queue.sql import IMAGES, SqlJobStore, to_job
from tests.factories import FakeClock, completed, job_values


@pytest.fixture
async def store(db_engine: AsyncEngine) -> AsyncIterator[SqlJobStore]:
    job_store = SqlJobStore(db_engine, clock=FakeClock())
    yield job_store
    await job_store.close()


async def through_sqlalchemy(engine: AsyncEngine, job_id: uuid.UUID) -> ImageJob | None:
    async with engine.connect() as connection:
        row = (await connection.execute(select(IMAGES).where(IMAGES.c.id == job_id))).first()
    return to_job(row) if row is not None else None


async def varied_rows(store: SqlJobStore) -> list[uuid.UUID]:
    """Queued, processing, completed with JSON and a consistency report, failed, unicode."""
    rows = [
        job_values(index, params={"seed": index, "scene_notes": "tocha acesa — caverna"})
        for index in range(5)
    ]
    rows[4]["user_id"] = "usuário-ç"
    await store.insert(rows, None)
    first = await store.claim("w-1", 30.0)
    second = await store.claim("w-1", 30.0)
    third = await store.claim("w-1", 30.0)
    assert first
    assert second
    assert third
    assert await store.report_progress(first.id, "w-1", 0.42)
    done = completed(
        7,
        negative_prompt="n",
        cost_usd=0.04,
        provider_latency_ms=12.5,
        attempt_log=[{"provider": "preview", "outcome": "ok", "ms": 12.5}],
    )
    assert await store.complete(second.id, "w-1", done)
    assert await store.set_consistency(second.id, {"palette": {"score": 0.9}}, 0.9, "ab" * 8)
    assert await store.fail(third.id, "w-1", "provider_down", "down: ünïcode", [{"x": 1}])
    return [row["id"] for row in rows]


async def test_a_point_read_returns_what_sqlalchemy_reads(
    store: SqlJobStore, db_engine: AsyncEngine
) -> None:
    ids = await varied_rows(store)
    statuses = set()
    for job_id in [*ids, uuid.uuid4()]:
        fast = await store.get(job_id)
        assert fast == await through_sqlalchemy(db_engine, job_id)
        statuses.add(fast.status if fast else None)
    assert statuses == {
        JobStatus.QUEUED,
        JobStatus.PROCESSING,
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        None,
    }
    completed = [job for job in [await store.get(i) for i in ids] if job and job.consistency]
    assert completed[0].consistency == {"palette": {"score": 0.9}}
    assert completed[0].created_at.tzinfo is not None


async def test_queued_ahead_counts_the_jobs_claimed_before(store: SqlJobStore) -> None:
    first = job_values(0)["created_at"]
    rows = [job_values(i, next_attempt_at=first + timedelta(seconds=i)) for i in range(6)]
    await store.insert(rows[::-1], None)
    jobs = [job for row in rows if (job := await store.get(row["id"])) is not None]
    assert [await store.queued_ahead(job) for job in jobs] == [0, 1, 2, 3, 4, 5]
    claimed = await store.claim("w-1", 30.0)
    assert claimed is not None
    assert claimed.id == rows[0]["id"]
    assert await store.queued_ahead(jobs[5]) == 4  # jobs[5] is now behind four queued ones


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_a_writer_holding_the_lock_does_not_block_the_read(
    store: SqlJobStore, database_url: str
) -> None:
    ids = await varied_rows(store)
    path = database_url.split("///", 1)[1]
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE generated_images SET progress = 0.99")
        started = time.perf_counter()
        job = await store.get(ids[0])
        assert time.perf_counter() - started < 0.5
        assert job is not None
        assert job.progress != 0.99
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_a_broken_loop_connection_falls_back_and_is_replaced(
    store: SqlJobStore,
) -> None:
    ids = await varied_rows(store)
    runner = store._db
    expected = await store.get(ids[1])
    assert runner._loop is not None
    runner._loop[1].close()  # every use of it now raises sqlite3.ProgrammingError
    assert await store.get(ids[1]) == expected  # through the database thread
    assert runner._loop is None
    assert await store.get(ids[1]) == expected  # a new loop connection
    assert runner._loop is not None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_the_read_never_goes_to_the_database_thread(db_engine: AsyncEngine) -> None:
    runner = TransactionRunner(db_engine)
    read = PointRead(select(IMAGES.c.id, IMAGES.c.status).where(IMAGES.c.id == bindparam("id")))
    try:
        assert await runner.read_point(read, {"id": uuid.uuid4()}) is None
        assert runner._thread is not None
        assert not runner._thread._threads  # the executor starts its thread on first use
        assert runner._loop is not None
    finally:
        runner.close()
