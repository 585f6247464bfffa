"""Checking that a provider adapter takes its intake slot between the headers and the body."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

from caverna.providers.base import GenerationRequest, ProviderImage
from caverna.providers.intake import IntakeGate, IntakeTicket


class WatchedTicket:
    """A real ticket that also says when an adapter started waiting on it."""

    def __init__(self, ticket: IntakeTicket) -> None:
        self.ticket = ticket
        self.waiting = asyncio.Event()
        self.admits = 0

    def available(self) -> bool:
        return self.ticket.available()

    async def admit(self) -> float:
        self.admits += 1
        self.waiting.set()
        return await self.ticket.admit()

    def release(self) -> None:
        self.ticket.release()


async def generate_behind_a_full_gate(
    generate: Callable[[GenerationRequest], Coroutine[Any, Any, ProviderImage]],
    request: GenerationRequest,
    *,
    hold_seconds: float,
) -> tuple[ProviderImage, WatchedTicket]:
    """Generate while another job holds the only slot for `hold_seconds` after the adapter
    asked for it; the adapter must wait without failing, then finish holding the slot."""
    gate = IntakeGate(1)
    other = gate.ticket()
    await other.admit()
    watched = WatchedTicket(gate.ticket())
    task = asyncio.create_task(generate(dataclasses.replace(request, intake=watched)))
    try:
        await asyncio.wait_for(watched.waiting.wait(), 30)
        # the answer is in; the adapter waits for room, longer than its own timeout allows
        await asyncio.sleep(hold_seconds)
        if task.done():
            raise AssertionError(f"the adapter went on without room: {task.exception()!r}")
        other.release()
        image = await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
    assert watched.ticket.held, "the slot must stay held until the image is stored"
    assert watched.admits == 1
    watched.release()
    return image, watched
