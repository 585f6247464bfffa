"""Provider request rates shared through a real Redis: two limiters, as two worker processes
would hold, draw on one budget. Each test uses its own key namespace and removes its keys."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from caverna.brand.registry import PackRegistry
from caverna.prompting.engine import PromptEngine
from caverna.providers.base import GenerationRequest
from caverna.providers.ratelimit import ProviderRateLimit, RateLimitExhausted
from caverna.providers.resilience import ResilientProvider, RetrySettings
from caverna.ratelimiting import RateLimiter
from tests.doubles import ScriptedProvider

REQUEST = GenerationRequest(
    job_id="job-1",
    compiled=PromptEngine(PackRegistry()).compile({"seed": 1}, "openai"),
    delivery="webp",
)


async def no_progress(_: float) -> None:
    return None


@dataclass
class Shared:
    """Two limiters on one Redis (one per simulated process) and a namespace of this test's own."""

    first: RateLimiter
    second: RateLimiter
    namespace: str
    used: list[tuple[str, str]]

    def remember(self, key: str, rate: str) -> None:
        self.used.append((key, rate))


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[Shared]:
    first, second = RateLimiter(redis_url), RateLimiter(redis_url)
    state = Shared(first, second, f"test-{uuid.uuid4().hex}", [])
    try:
        yield state
    finally:
        for key, rate in state.used:
            await first.clear(state.namespace, key, rate)
        await first.aclose()
        await second.aclose()


async def test_two_limiters_share_one_window(shared: Shared) -> None:
    shared.remember("key-1", "3/minute")
    assert shared.first.shared
    assert shared.second.shared
    hits = [
        await limiter.hit(shared.namespace, "key-1", "3/minute")
        for limiter in (shared.first, shared.second, shared.first, shared.second)
    ]
    assert [hit.allowed for hit in hits] == [True, True, True, False]
    assert [hit.remaining for hit in hits] == [2, 1, 0, 0]
    assert 58 < hits[-1].retry_after <= 60
    peeked = await shared.first.peek(shared.namespace, "key-1", "3/minute")
    assert (peeked.allowed, peeked.remaining) == (False, 0)
    await shared.first.ping()


async def test_two_processes_calling_one_provider_keep_to_its_rate(shared: Shared) -> None:
    rate = "2/second"
    shared.remember("openai", rate)

    def process(limiter: RateLimiter, inner: ScriptedProvider) -> ResilientProvider:
        limit = ProviderRateLimit(limiter, "openai", rate, namespace=shared.namespace)
        return ResilientProvider(inner, rate_limit=limit, retry=RetrySettings(budget_seconds=10))

    inner_a, inner_b = ScriptedProvider("openai"), ScriptedProvider("openai")
    a, b = process(shared.first, inner_a), process(shared.second, inner_b)
    started = time.monotonic()
    await asyncio.gather(a.generate(REQUEST, no_progress), b.generate(REQUEST, no_progress))
    assert time.monotonic() - started < 0.5
    await b.generate(REQUEST, no_progress)  # the window is full: B waits for A's and its slot
    assert time.monotonic() - started >= 0.9
    assert (inner_a.calls, inner_b.calls) == (1, 2)


async def test_a_process_that_cannot_wait_is_told_when_to_come_back(shared: Shared) -> None:
    rate = "1/minute"
    shared.remember("stability", rate)
    limits = [
        ProviderRateLimit(limiter, "stability", rate, namespace=shared.namespace)
        for limiter in (shared.first, shared.second)
    ]
    inner_a, inner_b = ScriptedProvider("stability"), ScriptedProvider("stability")
    a = ResilientProvider(inner_a, rate_limit=limits[0], retry=RetrySettings(budget_seconds=5))
    b = ResilientProvider(inner_b, rate_limit=limits[1], retry=RetrySettings(budget_seconds=5))
    await a.generate(REQUEST, no_progress)
    with pytest.raises(RateLimitExhausted) as caught:
        await b.generate(REQUEST, no_progress)
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after is not None
    assert 55 < caught.value.retry_after <= 61
    assert inner_b.calls == 0
    assert b.breaker.snapshot().consecutive_failures == 0
