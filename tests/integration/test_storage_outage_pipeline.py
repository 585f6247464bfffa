"""A store that cannot be written when an image is ready: a short outage is waited out within the
job (the paid image is kept and stored once the store answers); a longer one costs an attempt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from caverna.bootstrap import Runtime, build_container, open_runtime
from caverna.config import Settings
from caverna.domain.jobs import ImageJob, JobErrorCode, JobStatus
from caverna.providers.preview import PreviewProvider
from caverna.services.processing import ProcessingOptions
from caverna.storage.base import StorageUnavailable
from caverna.storage.memory import MemoryStore
from tests.doubles import ScriptedProvider

FRAME = {"frame": "onboarding/lighting-the-torch", "seed": 77}


class OutageStore(MemoryStore):
    """Refuses the next `failing` writes as an unreachable backend would."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = 0
        self.refused = 0

    async def put(
        self, key: str, data: bytes, *, content_type: str, if_absent: bool = False
    ) -> None:
        if self.failing:
            self.failing -= 1
            self.refused += 1
            raise StorageUnavailable(f"write of {key}: connection refused")
        await super().put(key, data, content_type=content_type, if_absent=if_absent)


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider("stability")


@pytest.fixture
def store() -> OutageStore:
    return OutageStore()


OpenWaiting = Callable[[float], Awaitable[Runtime]]


@pytest.fixture
async def open_waiting(
    database_url: str, tmp_path: Path, provider: ScriptedProvider, store: OutageStore
) -> AsyncIterator[OpenWaiting]:
    """Opens a runtime whose jobs wait out an outage for the given seconds; closes it after."""
    opened: list[Runtime] = []

    async def open_one(wait: float) -> Runtime:
        settings = Settings(
            database_url=database_url, data_dir=tmp_path, max_attempts=3, image_processes=0
        )
        runtime = await open_runtime(
            build_container(settings),
            providers={"preview": PreviewProvider(), "stability": provider},
            store=store,
            processing=ProcessingOptions(
                lease_seconds=5, retry_base_seconds=0.01, storage_retry_seconds=wait
            ),
        )
        opened.append(runtime)
        return runtime

    yield open_one
    for runtime in opened:
        await runtime.aclose()


async def submit_and_drain(runtime: Runtime, store: OutageStore, failing: int) -> ImageJob:
    """One job whose image finds the store refusing `failing` writes, run by one worker."""
    store.failing = failing
    submitted = await runtime.generation.submit("ana", FRAME, provider="stability")
    await drain(runtime, 1)
    job = await runtime.generation.get(submitted.job.id)
    assert job is not None
    return job


async def drain(runtime: Runtime, jobs: int) -> None:
    started = time.monotonic()
    await asyncio.wait_for(runtime.worker(concurrency=2).run(asyncio.Event(), max_jobs=jobs), 60)
    # a liveness check, not a speed target: a worker whose last job was requeued once sat out
    # a whole sweep interval (60 s) before returning
    assert time.monotonic() - started < 20


async def test_a_short_outage_is_waited_out_without_a_second_generation(
    open_waiting: OpenWaiting, provider: ScriptedProvider, store: OutageStore
) -> None:
    runtime = await open_waiting(10.0)
    job = await submit_and_drain(runtime, store, failing=3)
    assert job.status is JobStatus.COMPLETED
    assert store.refused == 3
    assert provider.calls == 1  # the image was paid for once
    assert job.attempts == 1
    assert job.storage_key is not None
    assert await store.head(job.storage_key) is not None


async def test_an_outage_longer_than_the_wait_costs_an_attempt_then_completes(
    open_waiting: OpenWaiting, provider: ScriptedProvider, store: OutageStore
) -> None:
    runtime = await open_waiting(0.0)
    waiting = await submit_and_drain(runtime, store, failing=1)
    assert waiting.status is JobStatus.QUEUED
    assert waiting.error_code == JobErrorCode.STORAGE_UNAVAILABLE
    assert waiting.attempts == 1
    await drain(runtime, 1)
    job = await runtime.generation.get(waiting.id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert store.refused == 1
    assert job.attempts == 2
    assert provider.calls == 2
    assert job.storage_key is not None
    assert await store.head(job.storage_key) is not None
