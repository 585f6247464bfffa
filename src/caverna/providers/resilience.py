"""Resilience around a provider: a per-call timeout, bounded retries that honour Retry-After, a
circuit breaker, a concurrency limit and, when configured, a request rate (see ratelimit.py).
The pipeline sees one ImageProvider either way.

Failures that say nothing about the provider's health (a bad request, a blocked prompt, an
exhausted quota, a rate limit) never trip the breaker; failures that do (unreachable, server
faults, timeouts, unusable answers) count towards opening it. While open, calls fail at once
with `provider_down` and a retry hint, so jobs go back to the queue (or to the next provider)
instead of piling onto a provider that is down. After `open_seconds` one probe call is let
through (half-open): its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.stop import stop_base

from caverna.providers.base import (
    ErrorKind,
    GenerationRequest,
    ImageProvider,
    ProgressCallback,
    ProviderError,
    ProviderImage,
    provider_error,
)
from caverna.providers.intake import ImageIntake, call_deadline
from caverna.providers.ratelimit import ProviderRateLimit, RateLimitExhausted

log = logging.getLogger(__name__)

# failures that say the provider itself is unwell
HEALTH_FAILURES: frozenset[str] = frozenset(
    {ErrorKind.PROVIDER_DOWN, ErrorKind.TRANSIENT, ErrorKind.TIMEOUT, ErrorKind.BAD_RESPONSE}
)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int = 5
    open_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    state: BreakerState
    consecutive_failures: int
    opened_at: float | None
    retry_in: float | None


class CircuitBreaker:
    """Closed, open, half-open with a single probe; the clock is injectable for tests."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings = BreakerSettings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self.transitions: list[tuple[BreakerState, BreakerState]] = []

    @property
    def state(self) -> BreakerState:
        opened_at = self._opened_at
        if (
            self._state is BreakerState.OPEN
            and opened_at is not None
            and self._clock() - opened_at >= self.settings.open_seconds
        ):
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def snapshot(self) -> BreakerSnapshot:
        state = self.state
        retry_in = None
        if state is BreakerState.OPEN and self._opened_at is not None:
            retry_in = max(self.settings.open_seconds - (self._clock() - self._opened_at), 0.0)
        return BreakerSnapshot(state, self._failures, self._opened_at, retry_in)

    def before_call(self) -> None:
        """Raise provider_down when the call may not go through."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return
        snapshot = self.snapshot()
        raise provider_error(
            ErrorKind.PROVIDER_DOWN,
            f"{self.name}: circuit breaker is {state.value}",
            retry_after=snapshot.retry_in if snapshot.retry_in else 1.0,
        )

    def record_success(self) -> None:
        self._probe_in_flight = False
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)
            self._opened_at = None

    def release_probe(self) -> None:
        """A call that never reached the provider says nothing of its health: someone else may
        probe instead."""
        self._probe_in_flight = False

    def record_failure(self, kind: str) -> None:
        probing = self._probe_in_flight
        self._probe_in_flight = False
        if kind not in HEALTH_FAILURES:
            return
        self._failures += 1
        if probing or self._failures >= self.settings.failure_threshold:
            if self._state is not BreakerState.OPEN:
                self._move(BreakerState.OPEN)
            self._opened_at = self._clock()

    def _move(self, target: BreakerState) -> None:
        self.transitions.append((self._state, target))
        log.log(
            logging.WARNING if target is BreakerState.OPEN else logging.INFO,
            "circuit breaker %s",
            target.value,
            extra={
                "provider": self.name,
                "breaker_from": self._state.value,
                "breaker_to": target.value,
                "consecutive_failures": self._failures,
            },
        )
        self._state = target


@dataclass(frozen=True, slots=True)
class RetrySettings:
    attempts: int = 3
    budget_seconds: float = 60.0
    base_seconds: float = 0.5
    max_seconds: float = 10.0
    call_timeout: float = 300.0


def backoff(attempt: int, settings: RetrySettings, retry_after: float | None) -> float:
    """Full jitter (uniform 0..exponential ceiling); the provider's own hint wins when larger."""
    ceiling = min(settings.base_seconds * 2.0 ** max(attempt - 1, 0), settings.max_seconds)
    jittered = random.uniform(0, ceiling)  # not for security: spreads retries
    return max(jittered, retry_after or 0.0)


class ResilientProvider:
    """Wraps one provider; the pipeline and the failover router only ever call this."""

    def __init__(
        self,
        inner: ImageProvider,
        *,
        breaker: CircuitBreaker | None = None,
        retry: RetrySettings = RetrySettings(),
        concurrency: int = 8,
        sleep: Callable[[float], object] = asyncio.sleep,
        observe: Callable[[str, str, float, float, BreakerState], None] | None = None,
        rate_limit: ProviderRateLimit | None = None,
    ) -> None:
        self.inner = inner
        self.rate_limit = rate_limit
        self._observe = observe
        self.name = inner.name
        self.breaker = breaker or CircuitBreaker(inner.name)
        self.retry = retry
        self._slots = asyncio.Semaphore(concurrency)
        self._sleep = sleep
        self.calls = 0
        self.failures: dict[str, int] = {}

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        started = time.monotonic()
        deadline = started + self.retry.budget_seconds  # rate-limit waits count against it
        intake = _PausingIntake(request.intake)
        request = dataclasses.replace(request, intake=intake)

        def spent() -> float:
            # waiting for room to hold the image is this process's delay, not the provider's
            return time.monotonic() - started - intake.paused

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, ProviderError) and exc.retryable

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            hint = error.retry_after if isinstance(error, ProviderError) else None
            delay = backoff(state.attempt_number, self.retry, hint)
            remaining = self.retry.budget_seconds - spent()
            if delay > remaining:  # waiting longer than the budget allows is pointless
                raise error if isinstance(error, ProviderError) else RuntimeError("budget")
            return delay

        retrying = AsyncRetrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(self.retry.attempts) | _OutOfBudget(spent, self.retry),
            wait=wait,
            sleep=self._sleep,  # type: ignore[arg-type]
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(request, progress, deadline)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _once(
        self, request: GenerationRequest, progress: ProgressCallback, deadline: float | None = None
    ) -> ProviderImage:
        self.breaker.before_call()
        self.calls += 1
        started = time.monotonic()
        intake = request.intake
        try:
            image, called_at = await self._call(request, progress, deadline)
            started = called_at or started
        except TimeoutError:
            intake.release()
            self._failed(ErrorKind.TIMEOUT, started)
            raise provider_error(
                ErrorKind.TIMEOUT, f"{self.name}: no image within {self.retry.call_timeout:g} s"
            ) from None
        except RateLimitExhausted:
            intake.release()
            self.breaker.release_probe()  # not a failure of the provider: no breaker count
            raise
        except ProviderError as exc:
            # a failed attempt must not keep the room for an image it will never deliver while
            # it backs off: the next attempt takes it again
            intake.release()
            self._failed(exc.code, started)
            raise
        except BaseException:
            # cancelled (lease lost, job cancelled) or a bug: nothing learned about the provider,
            # but a half-open breaker must not wait forever for this probe's verdict
            intake.release()
            self.breaker.release_probe()
            raise
        self.breaker.record_success()
        self._record("ok", started, image.cost_usd)
        return image

    async def _call(
        self, request: GenerationRequest, progress: ProgressCallback, deadline: float | None
    ) -> tuple[ProviderImage, float | None]:
        """One call under the concurrency slot, which is given back as soon as the answer waits
        for intake room: the provider's work is done by then. Also returns when the call left
        after a rate-limit wait (None: no wait), since the wait is not the provider's latency."""
        intake = request.intake
        called_at: float | None = None
        await self._slots.acquire()
        slot = _Slot(self._slots)
        try:
            if self.rate_limit is not None:  # the slot is taken just before the call
                await self.rate_limit.acquire(deadline)
                called_at = time.monotonic()
            if isinstance(intake, _PausingIntake):
                intake.before_wait = slot.release
            async with call_deadline(self.retry.call_timeout):
                return await self.inner.generate(request, progress), called_at
        finally:
            if isinstance(intake, _PausingIntake):
                intake.before_wait = None
            slot.release()

    def _failed(self, kind: str, started: float) -> None:
        log.info("provider call failed", extra={"provider": self.name, "error_code": kind})
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.breaker.record_failure(kind)
        self._record(kind, started, 0.0)

    def _record(self, outcome: str, started: float, cost: float) -> None:
        if self._observe is not None:
            self._observe(self.name, outcome, time.monotonic() - started, cost, self.breaker.state)


class _Slot:
    """A held semaphore slot that can be given back once, early or at the end."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


class _PausingIntake:
    """The job's intake ticket as one call sees it: frees the provider's concurrency slot before
    a wait for room, and adds up the waits so the retry budget leaves them out."""

    def __init__(self, inner: ImageIntake) -> None:
        self.inner = inner
        self.paused = 0.0
        self.before_wait: Callable[[], None] | None = None

    def available(self) -> bool:
        return self.inner.available()

    async def admit(self) -> float:
        if not self.inner.available() and self.before_wait is not None:
            self.before_wait()
        waited = await self.inner.admit()
        self.paused += waited
        return waited

    def release(self) -> None:
        self.inner.release()


class _OutOfBudget(stop_base):
    """Stop once the retry budget is spent, leaving out the time spent waiting for intake."""

    def __init__(self, spent: Callable[[], float], settings: RetrySettings) -> None:
        self._spent = spent
        self._settings = settings

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._spent() >= self._settings.budget_seconds
