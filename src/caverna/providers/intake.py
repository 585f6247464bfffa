"""A per-process bound on provider images held in memory.

A finished image is megabytes (base64 JSON, then bytes, then the stored copy). With a slow
provider and many jobs in flight, every answer used to be read as soon as it arrived and then
held while it waited for the image pool and the store, so memory grew with the number of jobs in
flight. The gate bounds that: an adapter takes a slot after the provider's response headers
arrive and *before* it reads the body, so an answer without a slot waits in the socket (kernel
buffers, flow-controlled) instead of in this process. The slot is held until the image is stored
or the attempt fails, and is released on every path.

Waiting for a slot is not the provider's time: the deadlines registered with `call_deadline`
(the adapter's own and the resilience wrapper's) stand still during the wait, so a burst of
answers never turns into provider timeouts or spent retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from caverna.providers.base import GenerationRequest

_DEADLINES: ContextVar[tuple[asyncio.Timeout, ...]] = ContextVar("call_deadlines", default=())


class ImageIntake(Protocol):
    """Room for one provider image in memory, owned by one job attempt."""

    def available(self) -> bool:
        """Whether `admit` would return at once (held already, or a free slot)."""

    async def admit(self) -> float:
        """Wait for room for one image body; seconds waited. Harmless when already held."""

    def release(self) -> None:
        """Give the room back; harmless when not held."""


class UnboundedIntake:
    """No bound at all: what a request gets when nobody passed a ticket (tests, tools)."""

    def available(self) -> bool:
        return True

    async def admit(self) -> float:
        return 0.0

    def release(self) -> None:
        return None


UNBOUNDED = UnboundedIntake()


class IntakeGate:
    """The process-wide slots; each job attempt takes a `ticket` and releases it when done."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"image intake slots must be at least 1, not {slots}")
        self.slots = slots
        self._semaphore = asyncio.Semaphore(slots)
        self.held = 0
        self.peak = 0
        self.waits = 0

    def ticket(self) -> IntakeTicket:
        return IntakeTicket(self)

    def _free(self) -> bool:
        return not self._semaphore.locked()

    async def _acquire(self) -> float:
        waited = 0.0
        if self._semaphore.locked():
            self.waits += 1
            started = time.monotonic()
            await self._semaphore.acquire()
            waited = time.monotonic() - started
        else:
            await self._semaphore.acquire()  # free: returns without suspending
        self.held += 1
        self.peak = max(self.peak, self.held)
        return waited

    def _release(self) -> None:
        self.held -= 1
        self._semaphore.release()


class IntakeTicket:
    """One job attempt's claim on the gate: acquired at most once, released exactly once."""

    def __init__(self, gate: IntakeGate) -> None:
        self._gate = gate
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def available(self) -> bool:
        return self._held or self._gate._free()

    async def admit(self) -> float:
        if self._held:
            return 0.0
        waited = await self._gate._acquire()
        # no await between acquiring and recording it: a cancel cannot leak the slot
        self._held = True
        return waited

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate._release()


@contextlib.asynccontextmanager
async def call_deadline(seconds: float | None) -> AsyncIterator[asyncio.Timeout]:
    """`asyncio.timeout(seconds)`, paused during any intake wait inside it (see `admit_image`)."""
    async with asyncio.timeout(seconds) as deadline:
        token = _DEADLINES.set((*_DEADLINES.get(), deadline))
        try:
            yield deadline
        finally:
            _DEADLINES.reset(token)


async def admit_image(request: GenerationRequest) -> None:
    """Take the request's intake slot before reading an image body. Every enclosing
    `call_deadline` stands still while this waits, and resumes with the time it had left."""
    intake = request.intake
    if intake.available():
        await intake.admit()
        return
    paused = [
        (deadline, when)
        for deadline in _DEADLINES.get()
        if (when := deadline.when()) is not None and not deadline.expired()
    ]
    for deadline, _ in paused:
        deadline.reschedule(None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await intake.admit()
    finally:
        waited = loop.time() - started
        for deadline, when in paused:
            deadline.reschedule(when + waited)
