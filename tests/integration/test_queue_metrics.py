"""Queue gauges against real SQLite and PostgreSQL: counts per provider and status, the age of
the oldest runnable job, the scrape-time cache, and what a failed read exports."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.metrics_server import QueueCollector, queue_collector
from caverna.queue.base import QueueBacklog
from caverna.queue.sql import SqlJobStore
from tests.factories import BASE_TIME, FakeClock, job_values

LEASE = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(db_engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[SqlJobStore]:
    job_store = SqlJobStore(db_engine, clock=clock)
    yield job_store
    await job_store.close()


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the text exposition, keyed by name and label set."""
    found = {}
    for line in generate_latest(registry).decode().splitlines():
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match[2]))
            found[(match[1], labels)] = float(match[3])
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


async def test_backlog_counts_live_jobs_per_provider_and_dates_the_oldest_runnable(
    store: SqlJobStore, clock: FakeClock
) -> None:
    assert await store.backlog() == []
    # created 1 day + 0..4 s before the clock; job 4 is for another provider
    jobs = [job_values(i) for i in range(4)] + [job_values(4, provider="openai")]
    await store.insert(jobs, None)
    claimed = await store.claim("w1", LEASE, providers=["preview"])  # the oldest: job 0
    assert claimed is not None
    assert claimed.seed == 0
    # job 1 goes back to the queue, due later: queued, but not runnable yet
    second = await store.claim("w1", LEASE, providers=["preview"])
    assert second is not None
    assert second.seed == 1
    later = clock.now + timedelta(minutes=5)
    assert await store.retry_later(second.id, "w1", "transient", "try again", later)
    done = await store.claim("w2", LEASE, providers=["preview"])
    assert done is not None
    assert done.seed == 2
    assert await store.fail(done.id, "w2", "provider_error", "gone")  # finished: not counted

    assert await store.backlog() == [
        QueueBacklog("openai", queued=1, processing=0, oldest_runnable_at=jobs[4]["created_at"]),
        # job 3 (runnable since its creation) is the oldest runnable; job 1 is waiting
        QueueBacklog("preview", queued=2, processing=1, oldest_runnable_at=jobs[3]["created_at"]),
    ]
    assert await store.claim("w3", LEASE, providers=["preview"]) is not None  # job 3
    (_, preview) = await store.backlog()
    assert (preview.queued, preview.processing, preview.oldest_runnable_at) == (1, 2, None)
    clock.advance(600)  # job 1's retry is due: runnable since its retry time, not its creation
    (_, preview) = await store.backlog()
    assert preview.oldest_runnable_at == later
    assert preview.oldest_runnable_at.tzinfo is not None


async def test_the_gauges_read_the_store_on_both_databases(
    store: SqlJobStore, clock: FakeClock
) -> None:
    await store.insert([job_values(0), job_values(1), job_values(2, provider="openai")], None)
    assert await store.claim("w1", LEASE, providers=["openai"]) is not None
    registry = CollectorRegistry()
    collector = queue_collector(registry, store, providers=["preview", "sdwebui"], clock=clock)
    await collector.refresh()
    got = samples(registry)
    expected_age = (clock.now - BASE_TIME).total_seconds()  # job 0 was created at BASE_TIME
    assert expected_age == 86400
    assert got == {
        key("caverna_queue_jobs", provider="openai", status="queued"): 0,
        key("caverna_queue_jobs", provider="openai", status="processing"): 1,
        key("caverna_queue_oldest_age_seconds", provider="openai"): 0,
        key("caverna_queue_jobs", provider="preview", status="queued"): 2,
        key("caverna_queue_jobs", provider="preview", status="processing"): 0,
        key("caverna_queue_oldest_age_seconds", provider="preview"): expected_age,
        # configured but idle: exported at zero rather than missing
        key("caverna_queue_jobs", provider="sdwebui", status="queued"): 0,
        key("caverna_queue_jobs", provider="sdwebui", status="processing"): 0,
        key("caverna_queue_oldest_age_seconds", provider="sdwebui"): 0,
    }
    # the age grows with the clock between reads of the store
    clock.advance(30)
    assert samples(registry)[key("caverna_queue_oldest_age_seconds", provider="preview")] == (
        expected_age + 30
    )
    # one collector per registry: asking again returns it rather than registering twice
    assert queue_collector(registry, store) is collector


class CountingSource:
    """A job store stand-in that counts reads and can be made to fail or to hold a read."""

    def __init__(self) -> None:
        self.reads = 0
        self.fail = False
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.rows = [QueueBacklog("preview", 3, 1, BASE_TIME)]

    async def backlog(self) -> list[QueueBacklog]:
        self.reads += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("database unavailable")
        return self.rows


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_scrape_storm_costs_one_read_per_cache_interval() -> None:
    source, ticker = CountingSource(), Ticker()
    collector = QueueCollector(source, clock=FakeClock(), monotonic=ticker, cache_seconds=5.0)
    source.gate = asyncio.Event()
    storm = [asyncio.create_task(collector.refresh()) for _ in range(50)]
    await source.started.wait()  # the first scrape reads; the others wait for its answer
    source.gate.set()
    await asyncio.gather(*storm)
    assert source.reads == 1
    ticker.now += 4.9
    await collector.refresh()
    assert source.reads == 1
    ticker.now += 0.2
    await collector.refresh()
    assert source.reads == 2


async def test_a_failed_read_drops_the_gauges_and_is_retried_after_the_interval() -> None:
    source, ticker = CountingSource(), Ticker()
    registry = CollectorRegistry()
    collector = QueueCollector(source, clock=FakeClock(), monotonic=ticker)
    registry.register(collector)
    await collector.refresh()
    assert samples(registry)[key("caverna_queue_jobs", provider="preview", status="queued")] == 3
    source.fail = True
    ticker.now += 10
    await collector.refresh()
    assert samples(registry) == {}  # no stale numbers shown as current
    assert "# TYPE caverna_queue_jobs gauge" in generate_latest(registry).decode()
    await collector.refresh()
    assert source.reads == 2  # a dead database is not asked again at every scrape
    source.fail = False
    ticker.now += 10
    await collector.refresh()
    assert samples(registry)[key("caverna_queue_jobs", provider="preview", status="queued")] == 3


async def test_a_read_that_hangs_is_abandoned_after_the_timeout() -> None:
    source = CountingSource()
    source.gate = asyncio.Event()  # never set
    registry = CollectorRegistry()
    collector = QueueCollector(source, clock=FakeClock(), timeout_seconds=0.05)
    registry.register(collector)
    await asyncio.wait_for(collector.refresh(), 5)
    assert samples(registry) == {}


def test_registering_the_collector_twice_on_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    registry.register(QueueCollector(CountingSource()))
    with pytest.raises(ValueError, match="caverna_queue_jobs"):
        registry.register(QueueCollector(CountingSource()))
