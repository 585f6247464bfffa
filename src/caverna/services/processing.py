"""Running one claimed job: compile, call the provider, process the image, store, complete.

The lease is renewed in the background while the provider works. Objects go under keys derived
from the job id, so a job retried after a crash overwrites its own earlier attempt instead of
leaving a second copy; the row is completed only while the lease is still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from caverna.domain.jobs import CompletedImage, ImageJob, JobErrorCode, JobStatus
from caverna.domain.problems import InvalidParametersError
from caverna.imaging import (
    Analyser,
    DeliveryFormat,
    Derivatives,
    ImageMetadata,
    ImageRejected,
    is_tiny_image,
    make_derivatives,
    process_image,
)
from caverna.logs import bind
from caverna.providers.base import (
    NO_FAILOVER_KINDS,
    ErrorKind,
    GenerationRequest,
    ImageProvider,
    ProviderError,
    provider_error,
)
from caverna.providers.intake import IntakeGate, IntakeTicket
from caverna.queue.base import DERIVATIVES_DONE, DERIVATIVES_FAILED, JobStore
from caverna.services.prompt_cache import CachedCompiler
from caverna.storage.base import ObjectNotFound, ObjectStore, StorageUnavailable
from caverna.storage.keys import image_key, thumbnail_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProcessingOptions:
    lease_seconds: float = 60.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 120.0
    progress_min_interval: float = 0.25
    # an unreachable store is written to again for this long before the job gives up an attempt
    storage_retry_seconds: float = 20.0
    # providers to try, in order, after the job's own one fails in a way another could fix
    failover: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Where the time of one job went, in milliseconds (the throughput benchmark reads it)."""

    compile_ms: float
    provider_ms: float
    imaging_ms: float
    storage_ms: float
    complete_ms: float


@dataclass(frozen=True, slots=True)
class DerivativeTimes:
    """One run of the derivatives pass: its wall time and when it ran (monotonic seconds)."""

    image_id: uuid.UUID
    ms: float
    at: float
    made: bool


def _log_storage_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "storage unavailable, writing the image again",
        extra={
            "write_attempt": state.attempt_number,
            "retry_in_s": round(state.upcoming_sleep, 3),
            "error_message": str(error)[:500],
        },
    )


class LeaseLost(Exception):
    """Another worker or a cancel took the job away while this one worked on it."""


def log_context(job: ImageJob, worker_id: str) -> dict[str, object]:
    """What every log line about a job carries, so one image's story can be found by its id."""
    return {
        "image_id": str(job.id),
        "sequence_id": str(job.sequence_id) if job.sequence_id else None,
        "provider": job.provider,
        "worker_id": worker_id,
        "attempt": job.attempts,
    }


class JobProcessor:
    def __init__(
        self,
        *,
        jobs: JobStore,
        compiler: CachedCompiler,
        providers: Mapping[str, ImageProvider],
        store: ObjectStore,
        clock: Callable[[], datetime],
        options: ProcessingOptions = ProcessingOptions(),
        images: Executor | None = None,
        intake: IntakeGate | None = None,
        analysers: Sequence[Analyser] = (),
    ) -> None:
        # image work holds the GIL for much of its time: in a process pool it neither stalls
        # the event loop nor competes with the database threads (None: the default threads)
        self.images = images
        self.jobs = jobs
        self.compiler = compiler
        self.providers = providers
        self.store = store
        self.clock = clock
        self.options = options
        # provider images held in memory at once, from the first body byte read to the store
        self.intake = intake
        self.recent_times: deque[StageTimes] = deque(maxlen=10_000)
        # jobs between "provider answered" and "stored", and when the last of them ended
        # (monotonic): the derivatives pass waits until none has run for a while
        self.image_work = 0
        self.image_work_ended = 0.0
        self.derivatives = DerivativesMaker(
            jobs=jobs, store=store, images=images, analysers=analysers
        )

    async def process(self, job: ImageJob, worker_id: str) -> JobStatus:
        """Run a claimed job to its next state; never raises for job-level failures."""
        with bind(**log_context(job, worker_id)):  # tasks started inside inherit the context
            return await self._process(job, worker_id)

    async def _process(self, job: ImageJob, worker_id: str) -> JobStatus:
        lost = asyncio.Event()
        attempts = list(job.attempt_log or [])
        renewer = asyncio.create_task(self._keep_lease(job, worker_id, lost))
        work = asyncio.create_task(self._run(job, worker_id, attempts))
        lease_lost = asyncio.create_task(lost.wait())
        try:
            done, _ = await asyncio.wait({work, lease_lost}, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                return await self._after_lost(job)
            return work.result()
        except LeaseLost:
            return await self._after_lost(job)
        except ProviderError as exc:
            return await self._provider_failed(job, worker_id, exc, attempts)
        except ImageRejected as exc:
            log.warning("job failed", extra={"error_code": JobErrorCode.IMAGE_REJECTED})
            await self.jobs.fail(
                job.id, worker_id, JobErrorCode.IMAGE_REJECTED, exc.message, attempts
            )
            return JobStatus.FAILED
        except InvalidParametersError as exc:
            log.warning("job failed", extra={"error_code": JobErrorCode.INVALID_REQUEST})
            await self.jobs.fail(
                job.id, worker_id, JobErrorCode.INVALID_REQUEST, str(exc), attempts
            )
            return JobStatus.FAILED
        except StorageUnavailable as exc:
            return await self._retry(
                job, worker_id, JobErrorCode.STORAGE_UNAVAILABLE, str(exc), attempts
            )
        except Exception as exc:  # a bug must not kill the worker; the job records it
            log.exception("job %s failed unexpectedly", job.id)
            return await self._retry(job, worker_id, JobErrorCode.INTERNAL, repr(exc), attempts)
        finally:
            for helper in (renewer, lease_lost):
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper

    def chain(self, first: str) -> list[str]:
        """The job's provider, then the failover order; only providers configured here."""
        names = [first, *(name for name in self.options.failover if name != first)]
        return [name for name in names if name in self.providers]

    async def _run(
        self, job: ImageJob, worker_id: str, attempts: list[dict[str, Any]]
    ) -> JobStatus:
        # the job's room for its image in memory: taken by the adapter once the answer's
        # headers are in, given back here whatever happens once the image is stored
        ticket = self.intake.ticket() if self.intake is not None else None
        try:
            return await self._run_holding(job, worker_id, attempts, ticket)
        finally:
            if ticket is not None:
                ticket.release()

    async def _run_holding(
        self,
        job: ImageJob,
        worker_id: str,
        attempts: list[dict[str, Any]],
        ticket: IntakeTicket | None,
    ) -> JobStatus:
        started = time.perf_counter()
        # progress is written at most every progress_min_interval: a job that finishes sooner
        # writes none, and the completion sets it to 1
        last_report = time.monotonic()

        async def progress(value: float) -> None:
            nonlocal last_report
            if value >= 1.0:
                return  # the completion writes 1 a few milliseconds later: spare the commit
            now = time.monotonic()
            if now - last_report >= self.options.progress_min_interval:
                last_report = now
                # scaled: the last tenth is image processing and storage
                if not await self.jobs.report_progress(job.id, worker_id, 0.9 * value):
                    raise LeaseLost(str(job.id))

        delivery = cast(DeliveryFormat, job.delivery_format)
        chain = self.chain(job.provider)
        if not chain:
            raise provider_error(
                ErrorKind.PROVIDER_DOWN, f"provider '{job.provider}' is not configured"
            )
        compiled_at = started
        for position, name in enumerate(chain):
            call_started = time.perf_counter()
            try:
                compiled = await self.compiler.compile(job.params, name, self.clock())
                compiled_at = time.perf_counter()
                request = GenerationRequest(
                    job_id=str(job.id),
                    compiled=compiled,
                    delivery=delivery,
                    **({"intake": ticket} if ticket is not None else {}),
                )
                image = await self.providers[name].generate(request, progress)
            except (ProviderError, InvalidParametersError) as exc:
                if ticket is not None:
                    ticket.release()  # the next provider in the chain takes it again
                code = exc.code if isinstance(exc, ProviderError) else ErrorKind.INVALID_REQUEST
                attempts.append(self._attempt(job, name, code, str(exc), call_started))
                error = exc if isinstance(exc, ProviderError) else None
                log.warning(
                    "provider attempt failed",
                    extra={
                        "provider": name,
                        "error_code": code,
                        "retryable": error is not None and error.retryable,
                        "retry_after": error.retry_after if error is not None else None,
                        "error_message": str(exc)[:500],
                    },
                )
                last = position == len(chain) - 1
                if last or (isinstance(exc, ProviderError) and code in NO_FAILOVER_KINDS):
                    raise
                log.warning(
                    "failing over",
                    extra={"provider": name, "error_code": code, "next": chain[position + 1]},
                )
                continue
            attempts.append(self._attempt(job, name, "ok", "", call_started))
            provider_name = name
            break
        provided_at = time.perf_counter()
        metadata = ImageMetadata(
            image_id=str(job.id),
            prompt=compiled.prompt,
            negative_prompt=compiled.negative_prompt,
            params=compiled.params,
            seed=image.seed if image.seed is not None else compiled.seed,
            provider=provider_name,
            model=image.model,
            template_version=compiled.template_version,
            pack_version=compiled.pack_version,
        )
        # the thumbnail is the derivatives pass's: completing never waits for a full decode
        work = functools.partial(
            process_image,
            image.data,
            delivery=delivery,
            metadata=metadata,
            with_thumbnail=False,
        )
        # a tiny image takes less time to process than a round trip to the process pool
        images = None if is_tiny_image(image.data) else self.images
        self.image_work += 1
        try:
            processed = await asyncio.get_running_loop().run_in_executor(images, work)
            processed_at = time.perf_counter()
            key = image_key(job.id, job.created_at, processed.extension)
            # deterministic: handed out now, made by the derivatives pass (or on request)
            thumb = thumbnail_key(job.id, job.created_at)
            await self._store_image((key, processed.data, processed.content_type))
        finally:
            self.image_work -= 1
            self.image_work_ended = time.monotonic()
        model, cost_usd, provider_latency_ms = image.model, image.cost_usd, image.latency_ms
        stored = (processed.content_type, processed.width, processed.height, processed.sha256)
        size = len(processed.data)
        del image, work, processed  # stored: hold no copy of the bytes while the row is written
        if ticket is not None:
            ticket.release()
        stored_at = time.perf_counter()
        result = CompletedImage(
            model=model,
            prompt=compiled.prompt,
            negative_prompt=compiled.negative_prompt,
            storage_key=key,
            thumbnail_key=thumb,
            content_type=stored[0],
            width=stored[1],
            height=stored[2],
            bytes=size,
            sha256=stored[3],
            cost_usd=cost_usd,
            provider_latency_ms=provider_latency_ms,
            seed=metadata.seed,
            provider=provider_name,
            attempt_log=attempts,
            variant=compiled.variant,
        )
        if not await self.jobs.complete(job.id, worker_id, result):
            await self._discard_if_abandoned(job, (key, thumb))
            return await self._after_lost(job)
        done_at = time.perf_counter()
        self.recent_times.append(
            StageTimes(
                compile_ms=(compiled_at - started) * 1000,
                provider_ms=(provided_at - compiled_at) * 1000,
                imaging_ms=(processed_at - provided_at) * 1000,
                storage_ms=(stored_at - processed_at) * 1000,
                complete_ms=(done_at - stored_at) * 1000,
            )
        )
        log.info(
            "job completed",
            extra={
                "provider": provider_name,
                "latency_ms": round((done_at - started) * 1000, 1),
                "provider_latency_ms": provider_latency_ms,
                "bytes": size,
            },
        )
        return JobStatus.COMPLETED

    async def _store_image(self, *objects: tuple[str, bytes, str]) -> None:
        """Write the image, waiting out a storage outage of up to storage_retry_seconds.

        The provider has been paid for this image by now: requeueing the job on the first
        failed write would cost an attempt and a second generation. The lease is renewed
        meanwhile, and writes are idempotent (same key, same bytes), so writing again is safe.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(StorageUnavailable),
            stop=stop_after_delay(self.options.storage_retry_seconds),
            wait=wait_exponential(multiplier=0.1, max=5.0),
            before_sleep=_log_storage_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._put_all(*objects)

    async def _put_all(self, *objects: tuple[str, bytes, str]) -> None:
        """Write the objects at once and raise the first failure only after every write ended.

        Concurrent writes wait for the storage together (a local disk folds their flushes into
        shared journal commits; S3 overlaps the requests), and the row is completed only once
        every object is durable.
        """
        results = await asyncio.gather(
            *(self.store.put(key, data, content_type=kind) for key, data, kind in objects),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _attempt(
        self, job: ImageJob, provider: str, outcome: str, message: str, started: float
    ) -> dict[str, Any]:
        return {
            "attempt": job.attempts,
            "provider": provider,
            "outcome": outcome,
            "message": message[:500],
            "at": self.clock().isoformat(),
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }

    async def _keep_lease(self, job: ImageJob, worker_id: str, lost: asyncio.Event) -> None:
        interval = max(self.options.lease_seconds / 3, 0.05)
        wait = interval
        while True:
            await asyncio.sleep(wait)
            try:
                renewed = await self.jobs.renew(job.id, worker_id, self.options.lease_seconds)
            except Exception as exc:
                # the database is briefly away: the lease still runs, so try again sooner; an
                # ended renewer would let it run out mid-render and the job be claimed twice
                log.warning("lease renewal failed, trying again: %s", exc)
                wait = interval / 3
                continue
            if not renewed:
                lost.set()
                return
            wait = interval

    async def _after_lost(self, job: ImageJob) -> JobStatus:
        current = await self.jobs.get(job.id)
        status = current.status if current else JobStatus.DELETED
        log.warning("lease lost", extra={"status": status.value})
        if current is not None and current.status in (JobStatus.CANCELLED, JobStatus.DELETED):
            await self._discard_if_abandoned(job, ())
        return status

    async def _discard_if_abandoned(self, job: ImageJob, keys: tuple[str, ...]) -> None:
        """Objects of a cancelled job are removed; a job taken over keeps them (same keys)."""
        current = await self.jobs.get(job.id)
        if current is None or current.status not in (JobStatus.CANCELLED, JobStatus.DELETED):
            return
        for key in keys or (
            image_key(job.id, job.created_at, job.delivery_format),
            thumbnail_key(job.id, job.created_at),
        ):
            with contextlib.suppress(Exception):
                await self.store.delete(key)

    async def _provider_failed(
        self,
        job: ImageJob,
        worker_id: str,
        error: ProviderError,
        attempts: list[dict[str, Any]],
    ) -> JobStatus:
        if error.retryable:
            return await self._retry(
                job, worker_id, error.code, error.message, attempts, error.retry_after
            )
        log.warning("job failed", extra={"error_code": error.code})
        await self.jobs.fail(job.id, worker_id, error.code, error.message, attempts)
        return JobStatus.FAILED

    async def _retry(
        self,
        job: ImageJob,
        worker_id: str,
        code: str,
        message: str,
        attempts: list[dict[str, Any]],
        retry_after: float | None = None,
    ) -> JobStatus:
        if job.attempts >= job.max_attempts:
            log.warning("job failed", extra={"error_code": code, "gave_up": True})
            await self.jobs.fail(
                job.id,
                worker_id,
                code,
                f"{message} (gave up after {job.attempts} attempts)",
                attempts,
            )
            return JobStatus.FAILED
        delay = retry_after if retry_after is not None else self.backoff(job.attempts)
        at = self.clock() + timedelta(seconds=delay)
        log.info("job requeued", extra={"error_code": code, "retry_in_s": round(delay, 3)})
        await self.jobs.retry_later(job.id, worker_id, code, message, at, attempts)
        return JobStatus.QUEUED

    def backoff(self, attempt: int) -> float:
        """Exponential with full jitter's upper half: spreads retries without starving any."""
        ceiling = min(
            self.options.retry_base_seconds * 2.0 ** max(attempt - 1, 0),
            self.options.retry_max_seconds,
        )
        return ceiling * (0.5 + random.random() / 2)


class DerivativesMaker:
    """The post-completion pass: one decode of the stored image for its thumbnail and for every
    analyser (see caverna.imaging.derivatives).

    It runs three ways: from the worker at low priority, whenever no job's image is being
    processed; as catch-up, since rows a crash left pending are found by the same query; and on
    demand, when a thumbnail is asked for before it exists. The thumbnail key is derived from
    the job, so concurrent makers (two processes, or the worker and a request) write the same
    bytes to the same key; within one process, one make per image runs at a time and the other
    callers wait for its outcome.
    """

    def __init__(
        self,
        *,
        jobs: JobStore,
        store: ObjectStore,
        images: Executor | None = None,
        analysers: Sequence[Analyser] = (),
        on_analyses: Callable[[ImageJob, Derivatives], Awaitable[None]] | None = None,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.images = images
        self.analysers = tuple(analysers)
        self.on_analyses = on_analyses
        # analysers that depend on the job (what its pack and frame expect), after the fixed ones
        self.analysers_for: Callable[[ImageJob], Sequence[Analyser]] | None = None
        self.recent: deque[DerivativeTimes] = deque(maxlen=10_000)
        # notified after every make, whatever its outcome (tests and tools wait on it)
        self.changed = asyncio.Condition()
        self._making: dict[uuid.UUID, asyncio.Future[bool]] = {}

    async def make(self, job: ImageJob) -> bool:
        """Make the image's thumbnail (and analyses); whether the thumbnail now exists."""
        running = self._making.get(job.id)
        if running is None:
            # a task of its own: a caller that gives up (a closed request) stops no one else
            running = asyncio.ensure_future(self._timed(job))
            self._making[job.id] = running
            running.add_done_callback(lambda _: self._making.pop(job.id, None))
        return await asyncio.shield(running)

    async def catch_up(
        self,
        limit: int = 100,
        *,
        may_continue: Callable[[], bool] = lambda: True,
        parallel: int = 1,
    ) -> int:
        """Work through up to `limit` pending images, oldest first, `parallel` at a time (the
        image pool's size keeps every process busy), while `may_continue()`; how many were
        looked at."""
        pending = deque(await self.jobs.pending_derivatives(limit))
        handled = 0

        async def lane() -> None:
            nonlocal handled
            while pending and may_continue():
                job = pending.popleft()
                handled += 1
                await self.make(job)

        await asyncio.gather(*(lane() for _ in range(max(parallel, 1))))
        return handled

    async def settle(self, timeout: float) -> None:
        """Let the makes in flight finish (those still running after `timeout` are cancelled:
        their rows stay pending for the next pass)."""
        running = list(self._making.values())
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _timed(self, job: ImageJob) -> bool:
        started = time.perf_counter()
        made = False
        try:
            made = await self._make(job)
            return made
        finally:
            self.recent.append(
                DerivativeTimes(job.id, (time.perf_counter() - started) * 1000, started, made)
            )
            async with self.changed:
                self.changed.notify_all()

    async def _make(self, job: ImageJob) -> bool:
        if job.storage_key is None:  # cannot happen to a completed row; never loop on it
            await self.jobs.finish_derivatives(job.id, DERIVATIVES_FAILED)
            return False
        key = thumbnail_key(job.id, job.created_at)
        with bind(image_id=str(job.id)):
            try:
                data = await self.store.get(job.storage_key)
            except ObjectNotFound:
                log.warning("derivatives: the stored image is missing")
                await self.jobs.finish_derivatives(job.id, DERIVATIVES_FAILED)
                return False
            per_job = tuple(self.analysers_for(job)) if self.analysers_for is not None else ()
            work = functools.partial(make_derivatives, data, analysers=self.analysers + per_job)
            images = None if is_tiny_image(data) else self.images
            try:
                derived = await asyncio.get_running_loop().run_in_executor(images, work)
            except ImageRejected as exc:
                # a pass-through image is first decoded here: a corrupt one is kept (it is what
                # the provider sent) and shown as the original instead of a thumbnail
                log.warning(
                    "derivatives failed",
                    extra={"error_code": exc.code, "error_message": exc.message},
                )
                await self.jobs.finish_derivatives(job.id, DERIVATIVES_FAILED)
                return False
            finally:
                del data, work
            await self.store.put(
                key, derived.thumbnail, content_type=derived.thumbnail_content_type
            )
            if self.on_analyses is not None and (derived.analyses or derived.errors):
                await self.on_analyses(job, derived)
            if not await self.jobs.finish_derivatives(job.id, DERIVATIVES_DONE):
                # deleted while the thumbnail was made: leave nothing behind
                with contextlib.suppress(Exception):
                    await self.store.delete(key)
                return False
            return True
