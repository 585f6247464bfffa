"""The worker loop: claim while there is capacity, process, sweep expired leases, stop cleanly.

Concurrency is bounded per provider (a local GPU takes one job at a time; a hosted API takes
more), and a worker only claims jobs for providers with a free slot, leaving the rest to others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from caverna.domain.jobs import ImageJob, JobStatus
from caverna.logs import bind
from caverna.queue.base import JobStore
from caverna.services.processing import JobProcessor, log_context

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerOptions:
    concurrency: int = 4
    per_provider: Mapping[str, int] = field(default_factory=dict)
    lease_seconds: float = 60.0
    poll_seconds: float = 1.0
    sweep_seconds: float = 5.0
    drain_seconds: float = 30.0


class Worker:
    def __init__(
        self,
        *,
        jobs: JobStore,
        processor: JobProcessor,
        providers: list[str],
        options: WorkerOptions,
        worker_id: str | None = None,
        on_finished: Callable[[ImageJob, JobStatus], None] | None = None,
    ) -> None:
        self.jobs = jobs
        self.processor = processor
        self.providers = providers
        self.options = options
        self.worker_id = worker_id or new_worker_id()
        self.on_finished = on_finished
        self.processed = 0
        self._running: dict[asyncio.Task[JobStatus], ImageJob] = {}

    def _free_providers(self) -> list[str]:
        busy: dict[str, int] = {}
        for job in self._running.values():
            busy[job.provider] = busy.get(job.provider, 0) + 1
        default = self.options.concurrency
        return [
            p for p in self.providers if busy.get(p, 0) < self.options.per_provider.get(p, default)
        ]

    async def run(self, stop: asyncio.Event, *, max_jobs: int | None = None) -> None:
        """Work until `stop` is set (or `max_jobs` are done), then finish what is in hand."""
        loop = asyncio.get_running_loop()
        next_sweep = 0.0
        try:
            while not stop.is_set():
                if max_jobs is not None and self.processed >= max_jobs and not self._running:
                    return
                if loop.time() >= next_sweep:
                    await self._sweep()
                    next_sweep = loop.time() + self.options.sweep_seconds
                claimed = await self._fill(max_jobs)
                if claimed:
                    continue
                await self._wait(stop)
        finally:
            await self._drain()

    async def _fill(self, max_jobs: int | None) -> int:
        claimed = 0
        while len(self._running) < self.options.concurrency:
            if max_jobs is not None and self.processed + len(self._running) >= max_jobs:
                break
            free = self._free_providers()
            if not free:
                break
            job = await self.jobs.claim(self.worker_id, self.options.lease_seconds, free)
            if job is None:
                break
            with bind(**log_context(job, self.worker_id)):
                log.info("job claimed")
            task = asyncio.create_task(self.processor.process(job, self.worker_id))
            task.add_done_callback(self._finished)
            self._running[task] = job
            claimed += 1
        return claimed

    def _finished(self, task: asyncio.Task[JobStatus]) -> None:
        job = self._running.pop(task, None)
        self.processed += 1
        if job is None or task.cancelled():
            return
        status = task.result() if task.exception() is None else JobStatus.QUEUED
        if self.on_finished is not None:
            self.on_finished(job, status)

    async def _wait(self, stop: asyncio.Event) -> None:
        own: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self.jobs.wait_for_work(self.options.poll_seconds)),
            asyncio.ensure_future(stop.wait()),
        }
        running: set[asyncio.Future[Any]] = set(self._running)  # a finished job frees a slot
        await asyncio.wait(own | running, return_when=asyncio.FIRST_COMPLETED)
        for future in own:
            future.cancel()
        await asyncio.gather(*own, return_exceptions=True)

    async def _sweep(self) -> None:
        try:
            result = await self.jobs.sweep()
        except Exception:  # the database may be briefly unavailable; the next sweep retries
            log.exception("sweep failed", extra={"worker_id": self.worker_id})
            return
        if result.requeued or result.failed:
            log.info(
                "sweep: %d requeued, %d failed",
                result.requeued,
                result.failed,
                extra={"worker_id": self.worker_id},
            )

    async def _drain(self) -> None:
        if not self._running:
            return
        tasks = list(self._running)
        _, pending = await asyncio.wait(tasks, timeout=self.options.drain_seconds)
        for task in pending:  # their leases expire and the sweeper hands them to others
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
