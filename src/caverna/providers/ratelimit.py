"""A provider's request rate, taken one slot per call attempt (retries included).

Staying under the provider's own limit is cheaper than hitting it: a 429 costs a round trip, and
some providers lengthen the penalty for clients that keep trying. When the rate is used up the
attempt waits for the window to free a slot, within the retry budget of the call; if no slot
frees in time it fails with `rate_limited` and the time to the next slot, so the job goes back
to the queue (or to the next provider) instead of holding a worker.

A limiter that cannot be reached (Redis down) does not stop generation: the call goes ahead, and
a provider's own 429 with Retry-After is still honoured by the retry layer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable

from caverna.providers.base import ErrorKind, ProviderError
from caverna.ratelimiting import RateLimiter, RateLimiterUnavailable, parse_rate

log = logging.getLogger(__name__)

NAMESPACE = "provider"
# a slot freed "now" may still read as taken for a moment on another host's clock
MIN_WAIT_SECONDS = 0.05


class RateLimitExhausted(ProviderError):
    """No slot of the provider's rate within the budget; the provider was never called."""

    def __init__(self, provider: str, rate: str, retry_after: float) -> None:
        super().__init__(
            ErrorKind.RATE_LIMITED.value,
            f"{provider}: request rate {rate} used up; next slot in {retry_after:.1f} s",
            retryable=True,
            retry_after=retry_after,
        )


class ProviderRateLimit:
    """One provider's rate on a RateLimiter: shared by every process on the same storage."""

    def __init__(
        self,
        limiter: RateLimiter,
        provider: str,
        rate: str,
        *,
        namespace: str = NAMESPACE,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter_seconds: float = 0.05,
    ) -> None:
        parse_rate(rate)  # a bad rate fails at start-up, not at the first call
        self.limiter = limiter
        self.provider = provider
        self.rate = rate
        self.namespace = namespace
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter_seconds

    async def acquire(self, deadline: float | None = None) -> float:
        """Take a slot, waiting for one until `deadline` (on the clock); else RateLimitExhausted.

        Returns the seconds spent waiting. Waiters of several processes wake when the same slot
        frees and only one gets it; the jitter keeps them from asking the storage all at once,
        and the others wait again.
        """
        waited = 0.0
        while True:
            try:
                decision = await self.limiter.hit(self.namespace, self.provider, self.rate)
            except RateLimiterUnavailable as exc:
                log.warning(
                    "rate limiter unavailable, calling without it",
                    extra={"provider": self.provider, "error": str(exc)},
                )
                return waited
            if decision.allowed:
                return waited
            delay = max(decision.retry_after, MIN_WAIT_SECONDS) + random.uniform(0, self._jitter)
            remaining = math.inf if deadline is None else deadline - self._clock()
            if delay > remaining:
                raise RateLimitExhausted(self.provider, self.rate, round(delay, 3))
            if not waited:  # once per call, not on every turn of the loop
                log.info(
                    "provider request rate reached, waiting for a slot",
                    extra={"provider": self.provider, "rate": self.rate, "wait_s": round(delay, 3)},
                )
            await self._sleep(delay)
            waited += delay
