"""Retries, timeouts and the circuit breaker around a provider, on a fake clock."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from prometheus_client import generate_latest

from caverna.brand.registry import PackRegistry
from caverna.prompting.engine import PromptEngine
from caverna.providers.base import ErrorKind, GenerationRequest, ProviderError, provider_error
from caverna.providers.metrics import ProviderMetrics
from caverna.providers.resilience import (
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    ResilientProvider,
    RetrySettings,
    backoff,
)
from tests.doubles import ScriptedProvider

REQUEST = GenerationRequest(
    job_id="job-1",
    compiled=PromptEngine(PackRegistry()).compile({"seed": 1}, "stability"),
    delivery="webp",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def no_progress(_: float) -> None:
    return None


def failing(*kinds: ErrorKind) -> deque[ProviderError]:
    return deque(provider_error(kind, "scripted") for kind in kinds)


def test_breaker_opens_after_consecutive_health_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", BreakerSettings(failure_threshold=3, open_seconds=10), clock)
    for kind in (ErrorKind.INVALID_REQUEST, ErrorKind.CONTENT_BLOCKED, ErrorKind.RATE_LIMITED):
        breaker.record_failure(kind)  # the request's or the account's fault: no trip
    assert breaker.snapshot().state is BreakerState.CLOSED
    for _ in range(3):
        breaker.before_call()
        breaker.record_failure(ErrorKind.PROVIDER_DOWN)
    assert breaker.snapshot().state is BreakerState.OPEN
    with pytest.raises(ProviderError) as caught:
        breaker.before_call()
    assert caught.value.code == "provider_down"
    assert caught.value.retryable
    assert caught.value.retry_after == 10


def test_breaker_half_open_lets_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", BreakerSettings(failure_threshold=1, open_seconds=10), clock)
    breaker.record_failure(ErrorKind.TIMEOUT)
    clock.now += 10
    assert breaker.snapshot().state is BreakerState.HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(ProviderError):
        breaker.before_call()  # everyone else waits for its outcome
    breaker.record_failure(ErrorKind.TRANSIENT)
    assert breaker.snapshot().state is BreakerState.OPEN
    clock.now += 10
    breaker.before_call()
    breaker.record_success()
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert breaker.transitions == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_backoff_is_full_jitter_capped_and_honours_retry_after() -> None:
    settings = RetrySettings(base_seconds=1, max_seconds=4)
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (9, 4)):
        delays = [backoff(attempt, settings, None) for _ in range(200)]
        assert min(delays) >= 0
        assert max(delays) <= ceiling
        assert max(delays) > ceiling / 2  # spread over the range, not a constant
    assert backoff(1, settings, 7.5) == 7.5


async def test_retries_transient_errors_then_succeeds() -> None:
    inner = ScriptedProvider("stability", errors=failing(ErrorKind.TRANSIENT, ErrorKind.TIMEOUT))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    provider = ResilientProvider(inner, retry=RetrySettings(attempts=3), sleep=sleep)
    image = await provider.generate(REQUEST, no_progress)
    assert image.model == "stability-test-model"
    assert inner.calls == 3
    assert len(waits) == 2
    assert provider.failures == {"transient": 1, "timeout": 1}


async def test_retry_after_is_honoured() -> None:
    errors = deque([provider_error(ErrorKind.RATE_LIMITED, "slow down", retry_after=3.0)])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    provider = ResilientProvider(ScriptedProvider("stability", errors=errors), sleep=sleep)
    await provider.generate(REQUEST, no_progress)
    assert waits[0] >= 3.0


@pytest.mark.parametrize(
    "kind", [ErrorKind.INVALID_REQUEST, ErrorKind.CONTENT_BLOCKED, ErrorKind.QUOTA_EXHAUSTED]
)
async def test_permanent_errors_are_not_retried(kind: ErrorKind) -> None:
    inner = ScriptedProvider("stability", errors=failing(kind))
    provider = ResilientProvider(inner)
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST, no_progress)
    assert caught.value.code == kind.value
    assert inner.calls == 1


async def test_gives_up_after_attempts_with_the_last_error() -> None:
    inner = ScriptedProvider("stability", errors=failing(*[ErrorKind.PROVIDER_DOWN] * 5))

    async def sleep(_: float) -> None:
        return None

    provider = ResilientProvider(
        inner,
        retry=RetrySettings(attempts=3),
        breaker=CircuitBreaker("stability", BreakerSettings(failure_threshold=10)),
        sleep=sleep,
    )
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST, no_progress)
    assert caught.value.code == "provider_down"
    assert inner.calls == 3


async def test_a_retry_hint_beyond_the_budget_stops_at_once() -> None:
    errors = deque([provider_error(ErrorKind.RATE_LIMITED, "later", retry_after=120.0)])
    inner = ScriptedProvider("stability", errors=errors)
    provider = ResilientProvider(inner, retry=RetrySettings(budget_seconds=5))
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST, no_progress)
    assert caught.value.retry_after == 120.0
    assert inner.calls == 1


async def test_a_hanging_provider_times_out_and_trips_the_breaker() -> None:
    inner = ScriptedProvider("stability", delay=5.0)
    provider = ResilientProvider(
        inner,
        retry=RetrySettings(attempts=1, call_timeout=0.05),
        breaker=CircuitBreaker("stability", BreakerSettings(failure_threshold=2)),
    )
    for _ in range(2):
        with pytest.raises(ProviderError) as caught:
            await provider.generate(REQUEST, no_progress)
        assert caught.value.code == "timeout"
    assert provider.breaker.state is BreakerState.OPEN
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST, no_progress)
    assert caught.value.code == "provider_down"
    assert inner.calls == 2  # the open breaker spared the provider


async def test_concurrency_is_limited() -> None:
    inner = ScriptedProvider("stability", delay=0.05)
    provider = ResilientProvider(inner, concurrency=2)
    await asyncio.gather(*(provider.generate(REQUEST, no_progress) for _ in range(6)))
    assert inner.max_in_flight == 2


async def test_metrics_count_outcomes_latency_cost_and_breaker() -> None:
    metrics = ProviderMetrics()
    inner = ScriptedProvider("stability", errors=failing(ErrorKind.TRANSIENT))

    async def sleep(_: float) -> None:
        return None

    provider = ResilientProvider(inner, observe=metrics.observe, sleep=sleep)
    await provider.generate(REQUEST, no_progress)
    text = generate_latest(metrics.registry).decode()
    assert 'caverna_provider_requests_total{outcome="transient",provider="stability"} 1.0' in text
    assert 'caverna_provider_requests_total{outcome="ok",provider="stability"} 1.0' in text
    assert 'caverna_provider_latency_seconds_count{provider="stability"} 2.0' in text
    assert 'caverna_provider_cost_usd_total{provider="stability"} 0.01' in text
    assert 'caverna_provider_breaker_state{provider="stability"} 0.0' in text


async def test_a_cancelled_probe_frees_the_half_open_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", BreakerSettings(failure_threshold=1, open_seconds=10), clock)
    breaker.record_failure(ErrorKind.TIMEOUT)
    clock.now += 10
    slow = ScriptedProvider("p", delay=30)
    resilient = ResilientProvider(slow, breaker=breaker, retry=RetrySettings(attempts=1))
    probe = asyncio.create_task(resilient.generate(REQUEST, no_progress))
    await slow.started.wait()
    probe.cancel()  # e.g. the job was cancelled while its call was the half-open probe
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.snapshot().state is BreakerState.HALF_OPEN
    breaker.before_call()  # a new probe may go through instead of waiting forever
