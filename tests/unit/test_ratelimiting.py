"""Request-rate limits: the generic limiter on its in-process storage, and the provider layer's
use of it (a slot per call attempt, waits within the retry budget, `rate_limited` beyond it)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from caverna.bootstrap import build_container, open_runtime, utcnow
from caverna.brand.registry import PackRegistry
from caverna.config import Settings
from caverna.domain.jobs import JobStatus
from caverna.prompting.engine import PromptEngine
from caverna.providers.base import (
    ErrorKind,
    GenerationRequest,
    ProgressCallback,
    ProviderError,
    ProviderImage,
    provider_error,
)
from caverna.providers.ratelimit import ProviderRateLimit, RateLimitExhausted
from caverna.providers.resilience import (
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    ResilientProvider,
    RetrySettings,
)
from caverna.ratelimiting import (
    RateLimiter,
    RateLimiterUnavailable,
    parse_rate,
    parse_rate_limits,
    storage_url,
)
from caverna.storage.memory import MemoryStore
from tests.doubles import ScriptedProvider

REQUEST = GenerationRequest(
    job_id="job-1",
    compiled=PromptEngine(PackRegistry()).compile({"seed": 1}, "stability"),
    delivery="webp",
)


async def no_progress(_: float) -> None:
    return None


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def limiter() -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter()
    yield limiter
    await limiter.aclose()


@dataclass
class TimedProvider(ScriptedProvider):
    """Records when each call reached the provider, to measure the pace of calls."""

    called_at: list[float] = field(default_factory=list)

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        self.called_at.append(time.monotonic())
        return await super().generate(request, progress)


# --- parsing ------------------------------------------------------------------------------------


def test_named_rates_are_parsed_and_kept_as_written() -> None:
    assert parse_rate_limits(" openai=60/minute , stability = 150/10 seconds,") == {
        "openai": "60/minute",
        "stability": "150/10 seconds",
    }
    assert parse_rate_limits("") == {}
    item = parse_rate("150/10 seconds")
    assert (item.amount, item.get_expiry()) == (150, 10)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("openai", "'openai' is not name=rate"),
        ("openai=", "'openai=' is not name=rate"),
        ("openai=60/minit", "'openai=60/minit': '60/minit' is not a rate like 60/minute"),
        ("openai=sixty/minute", "'openai=sixty/minute': 'sixty/minute' is not a rate"),
        ("openai=0/minute", "'openai=0/minute': '0/minute' allows no request at all"),
        ("openai=5/second;60/minute", "holds 2 rates; give exactly one"),
        ("dalle=5/second", "'dalle=5/second': unknown name 'dalle'; known: openai, stability"),
        ("openai=1/second,openai=2/second", "'openai=2/second': 'openai' is given more than once"),
    ],
)
def test_a_bad_rate_list_names_the_bad_item(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_rate_limits(value, names=("openai", "stability"))


def test_redis_urls_map_to_the_asyncio_storage_and_others_are_refused() -> None:
    assert storage_url(None) == "async+memory://"
    assert storage_url("") == "async+memory://"
    assert storage_url("redis://:pw@cache:6379/2") == "async+redis://:pw@cache:6379/2"
    assert storage_url("rediss://cache:6380") == "async+rediss://cache:6380"
    assert storage_url("unix:///run/redis.sock") == "async+redis+unix:///run/redis.sock"
    for bad in ("http://:hunter2@cache:6379", "cache:6379", "redis://"):
        with pytest.raises(ValueError, match="not a Redis URL") as caught:
            storage_url(bad)
        assert "hunter2" not in str(caught.value)  # a URL may hold a password: never echoed


def test_settings_validate_rates_and_redis_url_at_load() -> None:
    settings = Settings(provider_rate_limits="openai=50/minute", redis_url="redis://cache:6379/0")
    assert settings.provider_rates == {"openai": "50/minute"}
    with pytest.raises(ValidationError, match="'openai=50/minit'"):
        Settings(provider_rate_limits="openai=50/minit")
    with pytest.raises(ValidationError, match="unknown name 'dalle'"):
        Settings(provider_rate_limits="dalle=5/second")
    with pytest.raises(ValidationError, match="not a Redis URL"):
        Settings(redis_url="http://cache:6379")


# --- the generic limiter ------------------------------------------------------------------------


async def test_hits_are_counted_per_key_and_refused_past_the_limit(limiter: RateLimiter) -> None:
    decisions = [await limiter.hit("api", "key-1", "3/minute") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert {d.limit for d in decisions} == {3}
    assert decisions[0].retry_after == 0
    refused = decisions[-1]
    assert 58 < refused.retry_after <= 60  # when the first hit leaves the moving window
    assert refused.reset_at == pytest.approx(time.time() + refused.retry_after, abs=1)
    # other keys and other namespaces have their own windows
    assert (await limiter.hit("api", "key-2", "3/minute")).allowed
    assert (await limiter.hit("provider", "key-1", "3/minute")).allowed


async def test_keys_with_the_separator_do_not_collide(limiter: RateLimiter) -> None:
    assert (await limiter.hit("a", "b/c", "1/minute")).allowed
    assert (await limiter.hit("a/b", "c", "1/minute")).allowed
    assert not (await limiter.hit("a", "b/c", "1/minute")).allowed


async def test_peek_takes_no_slot_and_clear_resets(limiter: RateLimiter) -> None:
    await limiter.hit("api", "k", "2/minute")
    for _ in range(3):
        peeked = await limiter.peek("api", "k", "2/minute")
        assert (peeked.allowed, peeked.remaining) == (True, 1)
    await limiter.hit("api", "k", "2/minute")
    assert not (await limiter.peek("api", "k", "2/minute")).allowed
    await limiter.clear("api", "k", "2/minute")
    assert (await limiter.hit("api", "k", "2/minute")).remaining == 1


async def test_a_slot_frees_when_the_oldest_hit_leaves_the_window(limiter: RateLimiter) -> None:
    for _ in range(2):
        assert (await limiter.hit("api", "k", "2/second")).allowed
    refused = await limiter.hit("api", "k", "2/second")
    assert not refused.allowed
    assert 0 < refused.retry_after <= 1
    await asyncio.sleep(refused.retry_after + 0.02)
    assert (await limiter.hit("api", "k", "2/second")).allowed


async def test_a_cost_larger_than_the_limit_is_refused(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="can never fit"):
        await limiter.hit("api", "k", "2/minute", cost=3)


async def test_an_unreachable_redis_is_reported_quickly() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", timeout=1)  # nothing listens on port 1
    try:
        started = time.monotonic()
        with pytest.raises(RateLimiterUnavailable):
            await limiter.hit("api", "k", "1/second")
        with pytest.raises(RateLimiterUnavailable):
            await limiter.ping()
        assert time.monotonic() - started < 3
    finally:
        await limiter.aclose()


# --- the provider layer -------------------------------------------------------------------------


async def test_calls_over_the_rate_wait_for_the_window(limiter: RateLimiter) -> None:
    inner = TimedProvider("stability")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    rate = ProviderRateLimit(limiter, "stability", "2/second", sleep=sleep)
    provider = ResilientProvider(inner, rate_limit=rate, retry=RetrySettings(budget_seconds=10))
    for _ in range(3):
        await provider.generate(REQUEST, no_progress)
    assert inner.calls == 3
    assert waits  # the third call waited instead of calling
    # whatever the waits, no second ever saw more than two calls
    assert inner.called_at[2] - inner.called_at[0] >= 0.98
    assert provider.failures == {}


async def test_a_wait_beyond_the_budget_fails_rate_limited_with_a_hint(
    limiter: RateLimiter,
) -> None:
    inner = ScriptedProvider("stability")
    breaker = CircuitBreaker("stability", BreakerSettings(failure_threshold=1))
    rate = ProviderRateLimit(limiter, "stability", "1/minute")
    provider = ResilientProvider(
        inner, breaker=breaker, rate_limit=rate, retry=RetrySettings(budget_seconds=5)
    )
    await provider.generate(REQUEST, no_progress)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST, no_progress)
    assert time.monotonic() - started < 1  # no point waiting when the slot is a minute away
    error = caught.value
    assert isinstance(error, RateLimitExhausted)
    assert (error.code, error.retryable) == (ErrorKind.RATE_LIMITED, True)
    assert error.retry_after is not None
    assert 55 < error.retry_after <= 61
    assert inner.calls == 1
    # a local wait says nothing about the provider's health
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.consecutive_failures) == (BreakerState.CLOSED, 0)
    assert breaker.transitions == []
    assert provider.failures == {}


async def test_every_retry_takes_a_slot(limiter: RateLimiter) -> None:
    inner = ScriptedProvider("stability", errors=deque([provider_error(ErrorKind.TRANSIENT, "x")]))
    rate = ProviderRateLimit(limiter, "stability", "1/minute")
    provider = ResilientProvider(
        inner, rate_limit=rate, retry=RetrySettings(attempts=3, budget_seconds=5), sleep=no_sleep
    )
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST, no_progress)
    assert caught.value.code == "rate_limited"  # the retry found the minute's one slot taken
    assert inner.calls == 1
    assert provider.failures == {"transient": 1}  # only the real failure was counted
    assert provider.breaker.snapshot().consecutive_failures == 1


async def test_a_throttled_probe_lets_the_next_caller_probe(limiter: RateLimiter) -> None:
    now = [1000.0]
    breaker = CircuitBreaker(
        "stability", BreakerSettings(failure_threshold=1, open_seconds=10), lambda: now[0]
    )
    breaker.record_failure(ErrorKind.TIMEOUT)
    now[0] += 10
    assert breaker.state is BreakerState.HALF_OPEN
    await limiter.hit("provider", "stability", "1/minute")  # another process used the slot
    rate = ProviderRateLimit(limiter, "stability", "1/minute")
    provider = ResilientProvider(
        ScriptedProvider("stability"),
        breaker=breaker,
        rate_limit=rate,
        retry=RetrySettings(budget_seconds=0),
    )
    with pytest.raises(RateLimitExhausted):
        await provider.generate(REQUEST, no_progress)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the probe is free again; it was not spent on a call never made


async def test_an_unreachable_limiter_does_not_stop_generation() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", timeout=1)
    try:
        inner = ScriptedProvider("stability")
        rate = ProviderRateLimit(limiter, "stability", "1/minute")
        provider = ResilientProvider(inner, rate_limit=rate)
        for _ in range(2):
            await provider.generate(REQUEST, no_progress)
        assert inner.calls == 2
    finally:
        await limiter.aclose()


async def test_the_runtime_limits_configured_providers_and_requeues_what_cannot_wait(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        image_processes=0,
        provider_rate_limits="preview=2/minute",
        provider_retry_budget_seconds=0,
    )
    runtime = await open_runtime(build_container(settings), store=MemoryStore())
    try:
        preview = runtime.providers["preview"]
        assert isinstance(preview, ResilientProvider)
        assert preview.rate_limit is not None
        assert preview.rate_limit.limiter is runtime.rate_limiter
        assert not runtime.rate_limiter.shared
        ids = []
        for seed in range(3):
            submitted = await runtime.generation.submit(
                "ana", {"frame": "onboarding/training", "seed": seed}
            )
            ids.append(submitted.job.id)
        await asyncio.wait_for(runtime.worker().run(asyncio.Event(), max_jobs=3), 60)
        jobs = [await runtime.jobs.get(job_id) for job_id in ids]
        statuses = sorted(job.status for job in jobs if job is not None)
        assert statuses == [JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.QUEUED]
        (waiting,) = [job for job in jobs if job is not None and job.status is JobStatus.QUEUED]
        assert waiting.error_code == "rate_limited"
        assert waiting.next_attempt_at is not None
        # back in the queue until the window frees, not retried at once
        assert waiting.next_attempt_at - utcnow() > timedelta(seconds=50)
    finally:
        await runtime.aclose()
