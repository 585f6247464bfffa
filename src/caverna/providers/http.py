"""HTTP plumbing every adapter shares: one client session, error mapping, Retry-After.

aiohttp is the client: measured on this kind of machine, an httpx pass-through collapsed to
0.12x of the upstream's rate under 64 concurrent requests while aiohttp kept 0.98x, and image
responses are large. Transport failures are mapped to the taxonomy here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from caverna.providers.base import ErrorKind, ProviderError, provider_error

MAX_RETRY_AFTER_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    max_connections: int = 100


# What one connection reads from its socket ahead of the code that consumes it. asyncio reads up
# to 256 KiB per call and aiohttp buffers up to twice its read size before it stops reading: with
# 1,000 image answers arriving while only a few are admitted (see intake.py), that was about
# 600 KB of every waiting answer in this process. Small reads leave the rest in the kernel's
# socket buffers, flow-controlled, at the cost of a few more reads per admitted image.
READ_CHUNK_BYTES = 32 * 1024
READ_BUFFER_BYTES = 16 * 1024


class _SmallReadsConnector(aiohttp.TCPConnector):
    """A TCP connector whose connections read at most READ_CHUNK_BYTES at a time."""

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        if hasattr(transport, "max_size"):  # the selector transport's per-read size
            transport.max_size = READ_CHUNK_BYTES
        return transport, protocol


def new_session(settings: HttpSettings = HttpSettings()) -> aiohttp.ClientSession:
    """One session per process and provider set; adapters receive it, never create it."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
        ),
        connector=_SmallReadsConnector(limit=settings.max_connections),
        read_bufsize=READ_BUFFER_BYTES,
        trust_env=False,
    )


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return _bounded(float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _bounded(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return _bounded(when.timestamp() - (now if now is not None else time.time()))


def _bounded(seconds: float) -> float | None:
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0 if seconds == seconds else None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def kind_for_status(status: int) -> ErrorKind:
    """The usual meaning of a status; adapters refine it from the body where the API says more."""
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 402:
        return ErrorKind.QUOTA_EXHAUSTED
    if status == 408:
        return ErrorKind.TIMEOUT
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (502, 503, 504):
        return ErrorKind.PROVIDER_DOWN
    if status >= 500:
        return ErrorKind.TRANSIENT
    if 400 <= status < 500:
        return ErrorKind.INVALID_REQUEST
    return ErrorKind.BAD_RESPONSE


@contextlib.asynccontextmanager
async def transport_errors(provider: str) -> AsyncIterator[None]:
    """Map what the network can do wrong to the taxonomy, naming the provider."""
    try:
        yield
    except ProviderError:
        raise
    except TimeoutError as exc:
        raise provider_error(ErrorKind.TIMEOUT, f"{provider}: no answer in time") from exc
    except aiohttp.ClientConnectionError as exc:
        raise provider_error(
            ErrorKind.PROVIDER_DOWN, f"{provider}: cannot connect ({exc})"
        ) from exc
    except (aiohttp.ContentTypeError, aiohttp.ClientPayloadError, ValueError) as exc:
        raise provider_error(
            ErrorKind.BAD_RESPONSE, f"{provider}: unusable response ({exc})"
        ) from exc
    except aiohttp.ClientError as exc:
        raise provider_error(ErrorKind.TRANSIENT, f"{provider}: {exc}") from exc
    except asyncio.CancelledError:
        raise
