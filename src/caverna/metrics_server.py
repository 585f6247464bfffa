"""Prometheus metrics beyond the API's own: the queue's shape, and an endpoint for workers.

The queue gauges are read from the job store at scrape time, so every process that exports them
reports the whole deployment (aggregate them with `max`, never `sum`). Reads are cached for a
few seconds: several Prometheus servers, or a scrape storm, cost one query per interval.

`caverna worker` processes call the providers, so the provider metrics live there; in the
scale-out mode they serve no API. `MetricsServer` gives them a small HTTP endpoint of their own
(`/metrics` and `/healthz`) on the worker's event loop: an aiohttp site, already a dependency,
which keeps the async job store usable from the scrape handler without crossing threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from caverna.domain.jobs import JobStatus
from caverna.queue.base import QueueBacklog

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
QUERY_TIMEOUT_SECONDS = 3.0
SHUTDOWN_SECONDS = 2.0
QUEUE_JOBS = "caverna_queue_jobs"
QUEUE_OLDEST = "caverna_queue_oldest_age_seconds"
LIVE_STATUSES = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BacklogSource(Protocol):
    async def backlog(self) -> list[QueueBacklog]: ...


class QueueCollector(Collector):
    """Queue gauges per provider from the last store read, refreshed (at most every
    `cache_seconds`) by whoever serves the scrape, because `collect` itself cannot await.

    Known providers are always exported, at zero when idle, so a series does not vanish when its
    backlog empties and an alert on it resolves instead of going stale. A failed read drops the
    gauges until the next success rather than showing old numbers as current.
    """

    def __init__(
        self,
        jobs: BacklogSource,
        *,
        providers: Sequence[str] = (),
        clock: Callable[[], datetime] = _utcnow,
        cache_seconds: float = CACHE_SECONDS,
        timeout_seconds: float = QUERY_TIMEOUT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jobs = jobs
        self._providers = tuple(providers)
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._timeout_seconds = timeout_seconds
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._snapshot: list[QueueBacklog] | None = None
        self._read_at: float | None = None
        self.reads = 0  # store reads so far: what the cache saves is observable

    def _fresh(self) -> bool:
        return self._read_at is not None and self._monotonic() - self._read_at < self._cache_seconds

    async def refresh(self) -> None:
        """Read the store unless the last read is recent; concurrent scrapes share one read."""
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():
                return
            self.reads += 1
            try:
                async with asyncio.timeout(self._timeout_seconds):
                    self._snapshot = await self._jobs.backlog()
            except Exception:  # the database may be away: the other metrics still answer
                log.warning("queue metrics: the job store could not be read", exc_info=True)
                self._snapshot = None
            self._read_at = self._monotonic()

    def describe(self) -> Iterable[Metric]:
        # names only, so the registry can refuse a duplicate without reading the store
        return self._families()

    def collect(self) -> Iterable[Metric]:
        jobs, oldest = self._families()
        if self._snapshot is not None:
            now = self._clock()
            by_provider = {backlog.provider: backlog for backlog in self._snapshot}
            for provider in sorted({*self._providers, *by_provider}):
                backlog = by_provider.get(provider) or QueueBacklog(provider, 0, 0, None)
                jobs.add_metric([provider, JobStatus.QUEUED.value], backlog.queued)
                jobs.add_metric([provider, JobStatus.PROCESSING.value], backlog.processing)
                since = backlog.oldest_runnable_at
                age = 0.0 if since is None else max((now - since).total_seconds(), 0.0)
                oldest.add_metric([provider], age)
        return [jobs, oldest]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                QUEUE_JOBS,
                "Live image jobs per provider: queued (waiting) and processing (claimed), "
                "read from the database at scrape time.",
                labels=["provider", "status"],
            ),
            GaugeMetricFamily(
                QUEUE_OLDEST,
                "Seconds the oldest runnable queued job of a provider has waited for a worker "
                "(0: none waiting).",
                labels=["provider"],
            ),
        ]


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, QueueCollector] = (
    weakref.WeakKeyDictionary()
)


def queue_collector(
    registry: CollectorRegistry,
    jobs: BacklogSource,
    *,
    providers: Sequence[str] = (),
    clock: Callable[[], datetime] = _utcnow,
) -> QueueCollector:
    """The registry's queue collector, registered on first use: several apps over one runtime
    share a registry, and a second registration of the same names would be refused."""
    collector = _BY_REGISTRY.get(registry)
    if collector is None:
        collector = QueueCollector(jobs, providers=providers, clock=clock)
        registry.register(collector)
        _BY_REGISTRY[registry] = collector
    return collector


class MetricsServer:
    """`/metrics` (the process's registry, queue gauges refreshed first) and `/healthz` (200
    while `alive()` says the worker loop runs, 503 after), on the running event loop."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        alive: Callable[[], bool],
        collector: QueueCollector | None = None,
    ) -> None:
        self._registry = registry
        self._alive = alive
        self._collector = collector
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        # no access log: a scrape every few seconds would drown the worker's own lines
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port (port 0: any free port); the address actually bound.

        Raises OSError (address in use, unknown host) with nothing left listening.
        """
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except BaseException:
            await self._runner.cleanup()
            raise
        bound = self._runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))
        return self.address

    async def aclose(self) -> None:
        await self._runner.cleanup()
        self.address = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self._collector is not None:
            await self._collector.refresh()
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        if self._alive():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "stopped"}, status=503)
