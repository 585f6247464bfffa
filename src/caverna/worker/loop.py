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
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from caverna.domain.jobs import ImageJob, JobStatus
from caverna.logs import bind
from caverna.queue.base import JobStore
from caverna.services.processing import JobProcessor, log_context

log = logging.getLogger(__name__)
# a wake-up works through at most this many batches before it lets a sweep interval pass
DERIVATIVE_BATCHES_PER_WAKE = 64


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
    # the post-completion pass (thumbnails, analyses) at low priority: only once no job's
    # image has been processed here for `derivatives_quiet_seconds`, a batch at a time
    derivatives: bool = True
    derivatives_batch: int = 16
    derivatives_quiet_seconds: float = 0.2
    # makes at once: one per image-pool process keeps the pool busy when the pipeline is quiet
    derivatives_parallel: int = 2


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
        self._derive_wake = asyncio.Event()

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
        deriving = (
            asyncio.create_task(self._derive(), name="derivatives")
            if self.options.derivatives
            else None
        )
        try:
            while not stop.is_set():
                if max_jobs is not None and self.processed >= max_jobs and not self._running:
                    return
                if loop.time() >= next_sweep:
                    await self._sweep()
                    next_sweep = loop.time() + self.options.sweep_seconds
                try:
                    claimed = await self._fill(max_jobs)
                except Exception:  # the database may be briefly away: wait a poll, then retry
                    log.exception("claim failed", extra={"worker_id": self.worker_id})
                    claimed = 0
                if claimed:
                    continue
                await self._wait(stop)
        finally:
            if deriving is not None:
                deriving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await deriving
            await self._drain()
            if deriving is not None:
                await self.processor.derivatives.settle(self.options.drain_seconds)

    def _quiet_for(self) -> float | None:
        """How much longer to wait before the pipeline can spare the CPU (0: now; None: a job's
        image is being processed, and its end wakes the pass). Jobs that follow each other
        closely leave their thumbnails for a pause, so the pass never competes with them for
        the image pool, the disk or the database."""
        processor = self.processor
        if processor.image_work:
            return None
        quiet = time.monotonic() - processor.image_work_ended
        return max(self.options.derivatives_quiet_seconds - quiet, 0.0)

    def _spare(self) -> bool:
        return self._quiet_for() == 0.0

    async def _derive(self) -> None:
        """Thumbnails and analyses of completed jobs, at low priority. Woken by each finished
        job, and every sweep interval for rows other processes left pending (a crash)."""
        maker = self.processor.derivatives
        batch = max(self.options.derivatives_batch, 1)
        self._derive_wake.set()  # a fresh worker first catches up
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that comes
            # as the wake-up is set (a job's end sets it just before the loop stops), and the
            # pass would then sleep a whole sweep interval before the worker could return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.sweep_seconds):
                    await self._derive_wake.wait()
            self._derive_wake.clear()
            try:
                for _ in range(DERIVATIVE_BATCHES_PER_WAKE):
                    wait = self._quiet_for()
                    if wait is None:
                        break
                    if wait > 0:
                        await asyncio.sleep(wait)  # then look again: a job may have come
                        continue
                    if not await maker.catch_up(
                        batch, may_continue=self._spare, parallel=self.options.derivatives_parallel
                    ):
                        break
            except Exception:  # the database or the store may be briefly away: next wake-up
                log.exception("derivatives pass failed", extra={"worker_id": self.worker_id})

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
        self._derive_wake.set()
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
