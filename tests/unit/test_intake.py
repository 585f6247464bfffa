"""The per-process bound on provider images in memory, and how timeouts and retries treat it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque

import pytest

from caverna.brand.registry import PackRegistry
from caverna.prompting.engine import PromptEngine
from caverna.providers.base import (
    ErrorKind,
    GenerationRequest,
    ProgressCallback,
    ProviderError,
    ProviderImage,
    provider_error,
)
from caverna.providers.intake import IntakeGate, admit_image, call_deadline
from caverna.providers.resilience import ResilientProvider, RetrySettings

REQUEST = GenerationRequest(
    job_id="job-1",
    compiled=PromptEngine(PackRegistry()).compile({"seed": 1}, "stability"),
    delivery="webp",
)


async def no_progress(_: float) -> None:
    return None


class AnsweringProvider:
    """Answers at once, taking the intake slot as a real adapter does before reading a body;
    records when each call started and whether its slot was held when it returned."""

    name = "fake"

    def __init__(self, errors: deque[ProviderError] | None = None) -> None:
        self.errors = errors or deque()
        self.started: list[str] = []
        self.admitting = asyncio.Event()

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        self.started.append(request.job_id)
        self.admitting.set()
        await admit_image(request)
        if self.errors:
            raise self.errors.popleft()
        return ProviderImage(b"image", "image/webp", "m", 1, 0.0, 1.0)


def test_a_gate_needs_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        IntakeGate(0)


async def test_tickets_hold_one_slot_each_and_release_once() -> None:
    gate = IntakeGate(2)
    first, second, third = gate.ticket(), gate.ticket(), gate.ticket()
    assert await first.admit() == 0.0
    assert await first.admit() == 0.0  # already held: no second slot
    await second.admit()
    assert gate.held == 2
    assert not third.available()
    waiting = asyncio.create_task(third.admit())
    await asyncio.sleep(0)
    assert not waiting.done()
    first.release()
    first.release()  # harmless: the slot went back once
    assert await asyncio.wait_for(waiting, 5) >= 0.0
    assert third.held
    assert gate.held == 2
    assert gate.peak == 2
    assert gate.waits == 1


async def test_a_cancelled_wait_leaks_no_slot() -> None:
    gate = IntakeGate(1)
    holder, waiter = gate.ticket(), gate.ticket()
    await holder.admit()
    waiting = asyncio.create_task(waiter.admit())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    holder.release()
    assert not waiter.held
    assert gate.ticket().available()


async def test_deadlines_stand_still_while_waiting_for_room() -> None:
    gate = IntakeGate(1)
    holder = gate.ticket()
    await holder.admit()
    request = dataclasses.replace(REQUEST, intake=gate.ticket())

    async def admitted_within_a_short_deadline() -> None:
        async with call_deadline(0.2), call_deadline(0.3):
            await admit_image(request)

    task = asyncio.create_task(admitted_within_a_short_deadline())
    await asyncio.sleep(0.5)  # longer than either deadline: the wait must not count
    assert not task.done()
    holder.release()
    await asyncio.wait_for(task, 5)
    assert request.intake.available()


async def test_the_deadline_still_counts_the_provider_time() -> None:
    request = dataclasses.replace(REQUEST, intake=IntakeGate(1).ticket())

    async def slow_after_admission() -> None:
        async with call_deadline(0.05):
            await admit_image(request)
            await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        await slow_after_admission()


async def test_waiting_for_room_is_outside_the_call_timeout_and_frees_the_provider_slot() -> None:
    gate = IntakeGate(1)
    holder = gate.ticket()
    await holder.admit()
    inner = AnsweringProvider()
    provider = ResilientProvider(
        inner, retry=RetrySettings(attempts=1, call_timeout=0.2), concurrency=1
    )
    first = dataclasses.replace(REQUEST, job_id="waits", intake=gate.ticket())
    waiting = asyncio.create_task(provider.generate(first, no_progress))
    await asyncio.wait_for(inner.admitting.wait(), 5)
    inner.admitting.clear()

    # the only concurrency slot is free again: another job's call goes out meanwhile
    other = asyncio.create_task(provider.generate(REQUEST, no_progress))
    await asyncio.wait_for(inner.admitting.wait(), 5)
    assert inner.started == ["waits", "job-1"]
    await asyncio.wait_for(other, 5)

    await asyncio.sleep(0.3)  # past the call timeout, still waiting for room
    assert not waiting.done()
    holder.release()
    image = await asyncio.wait_for(waiting, 5)
    assert image.data == b"image"
    assert first.intake.available()  # held by the job until it stores the image
    assert provider.failures == {}


async def test_a_failed_attempt_gives_the_room_back_before_retrying() -> None:
    gate = IntakeGate(1)
    inner = AnsweringProvider(deque([provider_error(ErrorKind.BAD_RESPONSE, "garbled")]))
    held_during_backoff: list[int] = []

    async def sleep(_: float) -> None:
        held_during_backoff.append(gate.held)

    provider = ResilientProvider(
        inner, retry=RetrySettings(attempts=2, base_seconds=0.01), sleep=sleep
    )
    request = dataclasses.replace(REQUEST, intake=gate.ticket())

    await provider.generate(request, no_progress)

    assert held_during_backoff == [0]
    assert gate.held == 1  # the successful attempt holds it for the pipeline
    request.intake.release()
    assert gate.held == 0


async def test_a_final_failure_leaves_no_room_taken() -> None:
    gate = IntakeGate(1)
    inner = AnsweringProvider(deque([provider_error(ErrorKind.CONTENT_BLOCKED, "no")]))
    provider = ResilientProvider(inner, retry=RetrySettings(attempts=3))
    with pytest.raises(ProviderError):
        await provider.generate(dataclasses.replace(REQUEST, intake=gate.ticket()), no_progress)
    assert gate.held == 0
