"""The contract every image provider implements, and the one error shape they all raise.

The pipeline only ever sees these types: a provider turns a compiled prompt into image bytes and
reports failures with a stable code plus whether retrying can help, so retry and circuit-breaker
logic never parse vendor error messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from caverna.imaging import DeliveryFormat
from caverna.prompting.dialects.base import CompiledPrompt
from caverna.providers.intake import UNBOUNDED, ImageIntake

ProgressCallback = Callable[[float], Awaitable[None]]
"""Called with a fraction from 0 to 1 as generation advances."""


class MonotonicProgress:
    """Forwards progress only when it grows: polled servers repeat values, and some report
    another client's job while ours waits, so their numbers can go back."""

    def __init__(self, callback: ProgressCallback) -> None:
        self._callback = callback
        self._last = -1.0

    async def __call__(self, value: float) -> None:
        value = min(max(value, 0.0), 1.0)
        if value > self._last:
            self._last = value
            await self._callback(value)


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make: the job it belongs to, the prompt in the provider's dialect, the format.

    `delivery` lets a provider that can encode natively return the final format, so the pipeline
    never has to re-encode. `intake` is the job's slot in the process's bound on images held
    in memory: an adapter takes it (`admit_image`) after the response headers and before it
    reads an image body.
    """

    job_id: str
    compiled: CompiledPrompt
    delivery: DeliveryFormat
    intake: ImageIntake = field(default=UNBOUNDED, compare=False, repr=False)


@dataclass(frozen=True)
class ProviderImage:
    """What came back, as received: the bytes are validated and processed later, not here."""

    data: bytes
    content_type: str
    model: str
    seed: int | None
    cost_usd: float
    latency_ms: float


class ErrorKind(StrEnum):
    """The error taxonomy every provider response is mapped to at the adapter boundary."""

    INVALID_REQUEST = "invalid_request"  # fix the request; never retried, never failed over
    CONTENT_BLOCKED = "content_blocked"  # moderation; never retried, never failed over
    AUTH = "auth"  # key missing, wrong or not allowed
    QUOTA_EXHAUSTED = "quota_exhausted"  # out of credit: waiting does not help
    RATE_LIMITED = "rate_limited"  # slow down; Retry-After honoured
    TRANSIENT = "transient"  # a one-off server fault
    PROVIDER_DOWN = "provider_down"  # unreachable, overloaded, 502/503
    TIMEOUT = "timeout"  # no answer within the call's timeout
    BAD_RESPONSE = "bad_response"  # an answer we cannot use (malformed body, not an image)


RETRYABLE_KINDS: frozenset[str] = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.TRANSIENT,
        ErrorKind.PROVIDER_DOWN,
        ErrorKind.TIMEOUT,
        ErrorKind.BAD_RESPONSE,
    }
)
# failing over cannot fix what is wrong with the request itself
NO_FAILOVER_KINDS: frozenset[str] = frozenset(
    {ErrorKind.INVALID_REQUEST, ErrorKind.CONTENT_BLOCKED}
)


class ProviderError(Exception):
    """A failed generation, classified.

    `code` is one of ErrorKind's values. `retryable` says whether the same request may succeed
    later; `retry_after` (seconds) carries the provider's own hint when given.
    """

    def __init__(
        self, code: str, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, tuple[str, str, bool, float | None]]:
        # Keyword-only arguments defeat Exception's default pickling; workers in other processes
        # must still be able to hand the error back.
        return _restore_provider_error, (self.code, self.message, self.retryable, self.retry_after)


def require_dialect(compiled: CompiledPrompt, name: str, label: str) -> None:
    """A prompt compiled for another provider is a caller's mistake, never worth a retry."""
    if compiled.dialect != name:
        raise provider_error(
            ErrorKind.INVALID_REQUEST,
            f"the {label} provider takes '{name}' prompts, not '{compiled.dialect}'",
        )


def provider_error(
    kind: ErrorKind, message: str, *, retry_after: float | None = None
) -> ProviderError:
    """A ProviderError whose retryability follows the taxonomy."""
    return ProviderError(
        kind.value, message, retryable=kind in RETRYABLE_KINDS, retry_after=retry_after
    )


def _restore_provider_error(
    code: str, message: str, retryable: bool, retry_after: float | None
) -> ProviderError:
    return ProviderError(code, message, retryable=retryable, retry_after=retry_after)


@runtime_checkable
class ImageProvider(Protocol):
    """An image backend. Implementations must not block the event loop."""

    name: str

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage: ...
