"""Request-rate limits on a moving window, kept in this process or shared through Redis.

Generic on purpose: the provider layer limits calls per provider and the HTTP API limits requests
per key with the same limiter, so this module knows nothing of either. A moving window (not a
fixed one) means a burst at the edge of two windows can never reach twice the rate, which is
what a provider's own limiter would punish with 429s.

With the memory storage each process has its own budget; with Redis every process that points
at the same server shares one, so the rate holds for the whole deployment however many workers
run. The window is measured on each process's wall clock, so the hosts' clocks should be synced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.util import parse_many

MEMORY_STORAGE = "async+memory://"
# the schemes an operator writes, and the ones `limits` expects for its asyncio storage
REDIS_SCHEMES = {
    "redis": "async+redis",
    "rediss": "async+rediss",
    "unix": "async+redis+unix",
    "async+redis": "async+redis",
    "async+rediss": "async+rediss",
    "async+redis+unix": "async+redis+unix",
}
RATE_EXAMPLE = "60/minute or 150/10 seconds"


class RateLimiterUnavailable(RuntimeError):
    """The shared storage did not answer; the caller decides whether to fail open or closed."""


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one hit, with what an HTTP API puts in its RateLimit-* headers."""

    allowed: bool
    limit: int
    remaining: int
    # epoch seconds at which the oldest request in the window leaves it, freeing a slot
    reset_at: float
    # seconds to wait before a slot is free; 0 when the hit was allowed
    retry_after: float


def storage_url(redis_url: str | None) -> str:
    """The `limits` storage URL for a Redis URL as operators write it; memory when none."""
    if not redis_url:
        return MEMORY_STORAGE
    parts = urlsplit(redis_url)
    target = REDIS_SCHEMES.get(parts.scheme.lower())
    if target is None or "://" not in redis_url or not (parts.netloc or parts.path):
        # the URL itself is not repeated: it may hold a password
        raise ValueError(
            f"not a Redis URL (scheme '{parts.scheme}'): use redis://host:6379/0, rediss://… "
            "or unix://…"
        )
    return f"{target}://{redis_url.partition('://')[2]}"


@functools.lru_cache(maxsize=256)
def parse_rate(value: str) -> RateLimitItem:
    """One rate such as '60/minute' or '150/10 seconds'; ValueError says what is wrong."""
    text = value.strip()
    try:
        items = parse_many(text)
    except ValueError:
        raise ValueError(f"'{value}' is not a rate like {RATE_EXAMPLE}") from None
    if len(items) != 1:
        raise ValueError(f"'{value}' holds {len(items)} rates; give exactly one")
    item = items[0]
    if item.amount < 1:
        raise ValueError(f"'{value}' allows no request at all; the amount must be 1 or more")
    return item


def parse_rate_limits(value: str, *, names: Collection[str] | None = None) -> dict[str, str]:
    """'openai=60/minute,stability=150/10 seconds' as {name: rate}; every rate is checked.

    `names`, when given, are the only names allowed (a typo would otherwise silently leave a
    provider unlimited).
    """
    limits: dict[str, str] = {}
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        name, separator, rate = (part.strip() for part in item.partition("="))
        if not separator or not name or not rate:
            raise ValueError(f"'{item}' is not name=rate, e.g. openai={RATE_EXAMPLE.split()[0]}")
        if names is not None and name not in names:
            raise ValueError(f"'{item}': unknown name '{name}'; known: {', '.join(sorted(names))}")
        if name in limits:
            raise ValueError(f"'{item}': '{name}' is given more than once")
        try:
            parse_rate(rate)
        except ValueError as exc:
            raise ValueError(f"'{item}': {exc}") from None
        limits[name] = rate
    return limits


class RateLimiter:
    """Moving-window limits per (namespace, key), in memory or in Redis.

    Keys are escaped, so a key holding '/' (the separator `limits` builds storage keys with) can
    never collide with another namespace's key. Every storage call is bounded by `timeout`: a
    Redis that hangs must not hang the callers, who get RateLimiterUnavailable instead.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        key_prefix: str = "caverna",
        timeout: float = 2.0,
    ) -> None:
        self.url = storage_url(redis_url)
        self.shared = self.url != MEMORY_STORAGE
        self._timeout = timeout
        storage = storage_from_string(self.url, key_prefix=key_prefix, wrap_exceptions=True)
        if not isinstance(storage, Storage):  # pragma: no cover - the async+ schemes give these
            raise TypeError(f"{self.url} did not give an asyncio storage")
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(storage)
        errors = storage.base_exceptions
        self._errors: tuple[type[BaseException], ...] = (
            StorageError,
            OSError,
            TimeoutError,
            *(errors if isinstance(errors, tuple) else (errors,)),
        )

    async def hit(
        self, namespace: str, key: str, limit: str | RateLimitItem, *, cost: int = 1
    ) -> RateDecision:
        """Take `cost` slots of `limit` for the key if they are free; say when they will be."""
        item = parse_rate(limit) if isinstance(limit, str) else limit
        if not 1 <= cost <= item.amount:
            raise ValueError(f"cost {cost} can never fit in {item}")
        ids = _identifiers(namespace, key)
        async with self._guard():
            allowed = await self._strategy.hit(item, *ids, cost=cost)
            stats = await self._strategy.get_window_stats(item, *ids)
        return _decision(item, allowed, stats.reset_time, stats.remaining)

    async def peek(self, namespace: str, key: str, limit: str | RateLimitItem) -> RateDecision:
        """The state of a key's window without taking a slot (for status pages and headers)."""
        item = parse_rate(limit) if isinstance(limit, str) else limit
        async with self._guard():
            stats = await self._strategy.get_window_stats(item, *_identifiers(namespace, key))
        return _decision(item, stats.remaining > 0, stats.reset_time, stats.remaining)

    async def clear(self, namespace: str, key: str, limit: str | RateLimitItem) -> None:
        """Forget a key's window: an operator's reset, or a test cleaning up after itself."""
        item = parse_rate(limit) if isinstance(limit, str) else limit
        async with self._guard():
            await self._strategy.clear(item, *_identifiers(namespace, key))

    async def ping(self) -> None:
        """Raise RateLimiterUnavailable, with the reason, unless the storage answers.

        A read of the same kind a hit makes (of a key nothing writes): the storage's own
        check hides why it failed, and a health check should say.
        """
        await self.peek("health", "ping", "1/second")

    async def aclose(self) -> None:
        """Release the storage's connections (Redis) or its expiry task (memory)."""
        timer = getattr(self._storage, "timer", None)
        if isinstance(timer, asyncio.Task) and not timer.done():
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
        # `limits` offers no close; its Redis bridge keeps the coredis client as `storage`
        client: Any = getattr(getattr(self._storage, "bridge", None), "storage", None)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()

    @property
    def _safe_url(self) -> str:
        """The storage URL without credentials, for messages and logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Bounds a storage call in time and turns the storage's failures into one error."""
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError:
            raise RateLimiterUnavailable(f"{self._safe_url}: no answer in time") from None
        except self._errors as exc:
            raise RateLimiterUnavailable(f"{self._safe_url}: {exc}") from exc


def _identifiers(namespace: str, key: str) -> tuple[str, str]:
    return quote(namespace, safe=""), quote(key, safe="")


def _decision(item: RateLimitItem, allowed: bool, reset_at: float, remaining: int) -> RateDecision:
    retry_after = 0.0 if allowed else max(reset_at - time.time(), 0.0)
    return RateDecision(
        allowed=allowed,
        limit=item.amount,
        remaining=max(remaining, 0),
        reset_at=reset_at,
        retry_after=retry_after,
    )
