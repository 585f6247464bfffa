"""The post-completion pass: thumbnails (and analyses) made after a job completes, by the worker at
low priority, by catch-up after a crash, and on demand; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from caverna.api.routes.media import ensure_thumbnail
from caverna.bootstrap import Runtime, build_container, open_runtime
from caverna.config import Settings
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.imaging import Analyser, Derivatives
from caverna.providers.preview import PreviewProvider
from caverna.services.processing import DerivativesMaker, ProcessingOptions
from caverna.storage.memory import MemoryStore
from caverna.worker.loop import Worker, WorkerOptions
from tests.doubles import ScriptedProvider, solid_image

FRAME = {"frame": "onboarding/lighting-the-torch", "seed": 77}


@pytest.fixture
def scripted() -> ScriptedProvider:
    return ScriptedProvider("stability", image=solid_image("WEBP", (640, 400)))


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


async def open_pipeline(
    database_url: str, tmp_path: Path, store: MemoryStore, scripted: ScriptedProvider
) -> Runtime:
    settings = Settings(database_url=database_url, data_dir=tmp_path, image_processes=0)
    return await open_runtime(
        build_container(settings),
        providers={"preview": PreviewProvider(), "stability": scripted},
        store=store,
        processing=ProcessingOptions(lease_seconds=5, retry_base_seconds=0.01),
    )


@pytest.fixture
async def runtime(
    database_url: str, tmp_path: Path, store: MemoryStore, scripted: ScriptedProvider
) -> AsyncIterator[Runtime]:
    rt = await open_pipeline(database_url, tmp_path, store, scripted)
    yield rt
    await rt.aclose()


def worker(rt: Runtime, *, derivatives: bool) -> Worker:
    return Worker(
        jobs=rt.jobs,
        processor=rt.processor,
        providers=list(rt.providers),
        options=WorkerOptions(concurrency=2, derivatives=derivatives, sweep_seconds=0.2),
    )


async def completed_without_derivatives(rt: Runtime, jobs: int = 1) -> list[ImageJob]:
    """Jobs run to completion by a worker whose derivatives pass is off (as if it crashed
    right after completing them)."""
    ids = [
        (await rt.generation.submit("ana", {**FRAME, "seed": seed}, provider="stability")).job.id
        for seed in range(jobs)
    ]
    await asyncio.wait_for(worker(rt, derivatives=False).run(asyncio.Event(), max_jobs=jobs), 60)
    done = [await rt.jobs.get(job_id) for job_id in ids]
    assert all(job is not None and job.status is JobStatus.COMPLETED for job in done)
    return [job for job in done if job is not None]


def thumbnail_size(data: bytes) -> tuple[str | None, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.size


async def test_completion_hands_out_the_key_and_leaves_the_thumbnail_to_the_pass(
    runtime: Runtime, store: MemoryStore
) -> None:
    (job,) = await completed_without_derivatives(runtime)

    assert job.storage_key is not None
    assert job.thumbnail_key == f"thumbs/{job.created_at:%Y/%m}/{job.id}.webp"
    assert await store.head(job.storage_key) is not None
    assert await store.head(job.thumbnail_key) is None
    assert [pending.id for pending in await runtime.jobs.pending_derivatives(10)] == [job.id]

    assert await runtime.processor.derivatives.catch_up() == 1

    assert thumbnail_size(await store.get(job.thumbnail_key)) == ("WEBP", (256, 160))
    assert await runtime.jobs.pending_derivatives(10) == []
    assert await runtime.processor.derivatives.catch_up() == 0


async def test_the_worker_makes_thumbnails_when_no_image_is_being_processed(
    runtime: Runtime, store: MemoryStore
) -> None:
    results = [
        await runtime.generation.submit("ana", {**FRAME, "seed": seed}, provider="stability")
        for seed in range(3)
    ]
    keys = {f"thumbs/{r.job.created_at:%Y/%m}/{r.job.id}.webp" for r in results}
    maker = runtime.processor.derivatives
    stop = asyncio.Event()
    running = asyncio.create_task(worker(runtime, derivatives=True).run(stop))
    try:

        async def every_thumbnail_made() -> None:
            async with maker.changed:
                await maker.changed.wait_for(
                    lambda: (
                        {str(t.image_id) for t in maker.recent if t.made}
                        >= {str(r.job.id) for r in results}
                    )
                )

        await asyncio.wait_for(every_thumbnail_made(), 60)
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
    assert [key for key in keys if await store.head(key) is None] == []
    assert await runtime.jobs.pending_derivatives(10) == []
    assert await runtime.jobs.counts() == {"completed": 3}


async def test_a_crash_before_the_pass_is_caught_up_by_the_next_worker(
    database_url: str, tmp_path: Path, store: MemoryStore, scripted: ScriptedProvider
) -> None:
    first = await open_pipeline(database_url, tmp_path, store, scripted)
    try:
        jobs = await completed_without_derivatives(first, jobs=2)
    finally:
        await first.aclose()

    second = await open_pipeline(database_url, tmp_path, store, scripted)
    try:
        maker = second.processor.derivatives
        stop = asyncio.Event()
        running = asyncio.create_task(worker(second, derivatives=True).run(stop))
        try:

            async def caught_up() -> None:
                async with maker.changed:
                    await maker.changed.wait_for(lambda: sum(t.made for t in maker.recent) >= 2)

            await asyncio.wait_for(caught_up(), 60)
        finally:
            stop.set()
            await asyncio.wait_for(running, 60)
        for job in jobs:
            assert job.thumbnail_key is not None
            assert await store.head(job.thumbnail_key) is not None
        assert await second.jobs.pending_derivatives(10) == []
    finally:
        await second.aclose()


async def test_a_thumbnail_asked_for_early_is_made_on_the_spot_once(
    runtime: Runtime, store: MemoryStore
) -> None:
    (job,) = await completed_without_derivatives(runtime)
    assert job.thumbnail_key is not None

    # two requests at once (a gallery and a status poll): one decode, both get the thumbnail
    first, second = await asyncio.gather(
        ensure_thumbnail(runtime, job.thumbnail_key),
        ensure_thumbnail(runtime, job.thumbnail_key),
    )

    assert (first, second) == (None, None)  # serve the thumbnail itself
    assert await store.head(job.thumbnail_key) is not None
    assert len(runtime.processor.derivatives.recent) == 1
    assert await runtime.jobs.pending_derivatives(10) == []
    # made already: nothing more to do, and unknown keys are left to the 404
    assert await ensure_thumbnail(runtime, job.thumbnail_key) is None
    assert len(runtime.processor.derivatives.recent) == 1
    missing = f"thumbs/{job.created_at:%Y/%m}/{uuid.uuid4()}.webp"
    assert await ensure_thumbnail(runtime, missing) is None
    assert await store.head(missing) is None


async def test_an_image_that_cannot_be_decoded_falls_back_to_the_original(
    runtime: Runtime, store: MemoryStore, scripted: ScriptedProvider
) -> None:
    good = bytearray(solid_image("WEBP", (640, 400)))
    # the container is intact (its structure is checked at intake); the bitstream is not
    good[40:] = b"\xff" * (len(good) - 40)
    scripted.image = bytes(good)
    (job,) = await completed_without_derivatives(runtime)
    assert job.thumbnail_key is not None
    assert job.storage_key is not None

    fallback = await ensure_thumbnail(runtime, job.thumbnail_key)

    assert fallback == job.storage_key
    assert await store.head(job.thumbnail_key) is None
    assert await runtime.jobs.pending_derivatives(10) == []  # failed: not retried forever


async def test_a_thumbnail_of_an_image_deleted_meanwhile_is_not_kept(
    runtime: Runtime, store: MemoryStore
) -> None:
    (job,) = await completed_without_derivatives(runtime)
    assert job.thumbnail_key is not None
    await runtime.jobs.mark_deleted(job.id)

    assert not await runtime.processor.derivatives.make(job)

    assert await store.head(job.thumbnail_key) is None
    assert await runtime.jobs.pending_derivatives(10) == []


async def test_analysers_share_the_decode_and_one_failing_costs_nothing_else(
    runtime: Runtime, store: MemoryStore
) -> None:
    (job,) = await completed_without_derivatives(runtime)
    received: list[tuple[uuid.UUID, Derivatives]] = []

    def mean_red(image: Image.Image) -> Mapping[str, Any]:
        return {"red": round(ImageStat.Stat(image.convert("RGB")).mean[0])}

    def broken(image: Image.Image) -> Mapping[str, Any]:
        raise ValueError("not today")

    async def record(image_job: ImageJob, derived: Derivatives) -> None:
        received.append((image_job.id, derived))

    maker = DerivativesMaker(
        jobs=runtime.jobs,
        store=store,
        analysers=(Analyser("palette", mean_red), Analyser("broken", broken)),
        on_analyses=record,
    )

    assert await maker.make(job)

    ((image_id, derived),) = received
    assert image_id == job.id
    assert derived.analyses == {"palette": {"red": 0xF2}}
    assert derived.errors == {"broken": "ValueError: not today"}
    assert (derived.width, derived.height) == (640, 400)
    assert job.thumbnail_key is not None
    assert await store.get(job.thumbnail_key) == derived.thumbnail
