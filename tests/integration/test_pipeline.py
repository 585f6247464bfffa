"""The generation pipeline end to end on SQLite and PostgreSQL, with an in-memory store."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from caverna.bootstrap import Runtime, build_container, open_runtime, utcnow
from caverna.config import Settings
from caverna.domain.jobs import JobStatus
from caverna.domain.problems import InvalidParametersError
from caverna.imaging import read_metadata
from caverna.providers.base import ProviderError
from caverna.providers.preview import PreviewProvider
from caverna.services.processing import ProcessingOptions
from caverna.storage.memory import MemoryStore
from caverna.worker.loop import Worker, WorkerOptions
from tests.doubles import ScriptedProvider

FRAME = {"frame": "onboarding/lighting-the-torch", "seed": 77}


@pytest.fixture
def scripted() -> ScriptedProvider:
    return ScriptedProvider("stability")


@pytest.fixture
async def runtime(
    database_url: str, tmp_path: Path, scripted: ScriptedProvider
) -> AsyncIterator[Runtime]:
    settings = Settings(
        database_url=database_url, data_dir=tmp_path, max_attempts=3, image_processes=0
    )
    rt = await open_runtime(
        build_container(settings),
        providers={"preview": PreviewProvider(), "stability": scripted},
        store=MemoryStore(),
        processing=ProcessingOptions(lease_seconds=5, retry_base_seconds=0.01),
    )
    yield rt
    await rt.aclose()


async def drain(rt: Runtime, jobs: int) -> None:
    stop = asyncio.Event()
    await asyncio.wait_for(rt.worker(concurrency=4).run(stop, max_jobs=jobs), 60)


async def test_a_preview_job_is_generated_stored_and_recorded(runtime: Runtime) -> None:
    result = await runtime.generation.submit("ana", FRAME)
    assert not result.reused
    assert result.job.status is JobStatus.QUEUED
    await drain(runtime, 1)
    job = await runtime.generation.get(result.job.id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert job.progress == 1.0
    assert job.storage_key == (f"images/{job.created_at:%Y/%m}/{job.id}.webp")
    data = await runtime.store.get(job.storage_key)
    assert hashlib.sha256(data).hexdigest() == job.sha256
    assert job.bytes == len(data)
    assert (job.width, job.height) == (768, 1368)
    # the thumbnail key is handed out at completion; the derivatives pass makes the object
    assert job.thumbnail_key == f"thumbs/{job.created_at:%Y/%m}/{job.id}.webp"
    await runtime.processor.derivatives.catch_up()
    assert await runtime.store.head(job.thumbnail_key) is not None
    metadata = read_metadata(data)
    assert metadata["image_id"] == str(job.id)
    assert metadata["template_version"] == job.template_version
    assert metadata["seed"] == 77
    assert job.model == "caverna-preview-1"


async def test_identical_requests_reuse_the_job_unless_forced(runtime: Runtime) -> None:
    first = await runtime.generation.submit("ana", FRAME)
    again = await runtime.generation.submit("ana", dict(reversed(list(FRAME.items()))))
    assert again.reused
    assert again.job.id == first.job.id
    forced = await runtime.generation.submit("ana", FRAME, force=True)
    assert not forced.reused
    assert forced.job.id != first.job.id
    other_seed = await runtime.generation.submit("ana", {**FRAME, "seed": 78})
    assert not other_seed.reused


async def test_a_missing_seed_is_drawn_so_the_job_is_reproducible(runtime: Runtime) -> None:
    result = await runtime.generation.submit("ana", {"frame": FRAME["frame"]})
    assert result.job.seed is not None
    assert result.job.params["seed"] == result.job.seed


async def test_invalid_requests_change_nothing(runtime: Runtime) -> None:
    with pytest.raises(InvalidParametersError) as caught:
        await runtime.generation.submit("ana", {"pose": "flying", "seed": -1})
    assert set(caught.value.codes) == {"unknown_option", "out_of_range"}
    with pytest.raises(InvalidParametersError) as caught:
        await runtime.generation.submit("ana", FRAME, provider="midjourney")
    assert caught.value.codes == ["unknown_provider"]
    assert set(caught.value.problems[0].allowed) == {"preview", "stability"}
    assert await runtime.jobs.counts() == {}


async def test_retryable_errors_are_retried_then_succeed(
    runtime: Runtime, scripted: ScriptedProvider
) -> None:
    scripted.errors.append(ProviderError("unavailable", "busy", retryable=True))
    result = await runtime.generation.submit("ana", FRAME, provider="stability")
    await drain(runtime, 2)
    job = await runtime.generation.get(result.job.id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert job.attempts == 2
    assert scripted.calls == 2
    assert job.storage_key is not None
    assert job.storage_key.endswith(".webp")  # a PNG from the provider is delivered as WebP


async def test_permanent_errors_fail_with_their_code(
    runtime: Runtime, scripted: ScriptedProvider
) -> None:
    scripted.errors.append(ProviderError("content_blocked", "flagged", retryable=False))
    result = await runtime.generation.submit("ana", FRAME, provider="stability")
    await drain(runtime, 1)
    job = await runtime.generation.get(result.job.id)
    assert job is not None
    assert (job.status, job.error_code, job.attempts) == (JobStatus.FAILED, "content_blocked", 1)


async def test_retries_stop_after_max_attempts(
    runtime: Runtime, scripted: ScriptedProvider
) -> None:
    for _ in range(5):
        scripted.errors.append(ProviderError("unavailable", "down", retryable=True))
    result = await runtime.generation.submit("ana", FRAME, provider="stability")
    await drain(runtime, 3)
    job = await runtime.generation.get(result.job.id)
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert job.error_code == "unavailable"
    assert job.attempts == 3
    assert "gave up after 3 attempts" in (job.error_message or "")


async def test_bad_bytes_from_a_provider_fail_cleanly(
    runtime: Runtime, scripted: ScriptedProvider
) -> None:
    scripted.image = b"GIF89a not really"
    result = await runtime.generation.submit("ana", FRAME, provider="stability")
    await drain(runtime, 1)
    job = await runtime.generation.get(result.job.id)
    assert job is not None
    assert (job.status, job.error_code) == (JobStatus.FAILED, "image_rejected")
    assert await runtime.store.list_keys("images/") == []


async def test_cancelling_a_running_job_discards_its_work(
    runtime: Runtime, scripted: ScriptedProvider
) -> None:
    scripted.delay = 2.0
    result = await runtime.generation.submit("ana", FRAME, provider="stability")
    stop = asyncio.Event()
    worker = asyncio.create_task(runtime.worker().run(stop, max_jobs=1))
    await asyncio.wait_for(scripted.started.wait(), 10)
    cancelled = await runtime.generation.cancel(result.job.id)
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    await asyncio.wait_for(worker, 30)
    job = await runtime.generation.get(result.job.id)
    assert job is not None
    assert job.status is JobStatus.CANCELLED
    assert await runtime.store.list_keys("images/") == []


async def test_a_sequence_shares_its_seed_and_completes_in_order(runtime: Runtime) -> None:
    submitted = await runtime.generation.submit_sequence(
        "ana", "onboarding", {"seed": 5, "outfit": "captain-tunic"}
    )
    assert len(submitted.jobs) == 8
    assert [job.frame_index for job in submitted.jobs] == list(range(8))
    assert {job.seed for job in submitted.jobs} == {5}
    assert {job.outfit for job in submitted.jobs} == {"captain-tunic"}
    assert submitted.status == "queued"
    await drain(runtime, 8)
    done = await runtime.generation.sequence(submitted.sequence_id)
    assert done.status == "completed"
    assert done.jobs[0].frame_id == "onboarding/the-invitation"


async def test_an_invalid_sequence_inserts_nothing(runtime: Runtime) -> None:
    with pytest.raises(InvalidParametersError):
        await runtime.generation.submit_sequence("ana", "onboarding", {"outfit": "tuxedo"})
    assert await runtime.jobs.counts() == {}


async def test_the_prompt_cache_serves_the_worker(runtime: Runtime) -> None:
    await runtime.generation.submit("ana", FRAME)
    await drain(runtime, 1)
    now = utcnow()
    stats = await runtime.cache.stats(now)
    assert stats.entries == 1
    assert stats.hits >= 1  # submit compiled it, the worker found it
    assert stats.misses == 1
    assert await runtime.cache.prune(now, everything=True) == 1


async def test_concurrency_is_bounded_per_provider(
    runtime: Runtime, scripted: ScriptedProvider
) -> None:
    scripted.delay = 0.3
    for seed in range(3):
        await runtime.generation.submit("ana", {**FRAME, "seed": seed}, provider="stability")
    for seed in range(3):
        await runtime.generation.submit("ana", {**FRAME, "seed": seed})
    worker = Worker(
        jobs=runtime.jobs,
        processor=runtime.processor,
        providers=list(runtime.providers),
        options=WorkerOptions(concurrency=4, per_provider={"stability": 1}),
    )
    await asyncio.wait_for(worker.run(asyncio.Event(), max_jobs=6), 60)
    assert scripted.calls == 3
    assert scripted.max_in_flight == 1
    assert await runtime.jobs.counts() == {"completed": 6}


async def test_image_work_in_a_process_pool(tmp_path: Path, scripted: ScriptedProvider) -> None:
    """The default: image work runs in spawned processes; results and errors cross back."""
    settings = Settings(data_dir=tmp_path, image_processes=1)
    rt = await open_runtime(
        build_container(settings),
        providers={"preview": PreviewProvider(), "stability": scripted},
        store=MemoryStore(),
    )
    try:
        good = await rt.generation.submit("ana", FRAME, provider="stability")
        await drain(rt, 1)
        scripted.image = b"\x89PNG\r\n\x1a\n truncated"
        bad = await rt.generation.submit("ana", {**FRAME, "seed": 1}, provider="stability")
        await drain(rt, 1)
        done, rejected = await rt.generation.get(good.job.id), await rt.generation.get(bad.job.id)
        assert done is not None
        assert done.status is JobStatus.COMPLETED
        assert rejected is not None
        assert (rejected.status, rejected.error_code) == (JobStatus.FAILED, "image_rejected")
    finally:
        await rt.aclose()


async def failover_runtime(
    database_url: str, tmp_path: Path, scripted: ScriptedProvider
) -> Runtime:
    """Stability (scripted) first, the preview as the provider to fail over to."""
    settings = Settings(database_url=database_url, data_dir=tmp_path, image_processes=0)
    return await open_runtime(
        build_container(settings),
        providers={"stability": scripted, "preview": PreviewProvider()},
        store=MemoryStore(),
        processing=ProcessingOptions(failover=("stability", "preview")),
    )


async def test_failover_to_the_next_provider_is_recorded(
    database_url: str, tmp_path: Path, scripted: ScriptedProvider
) -> None:
    scripted.errors.append(ProviderError("provider_down", "gateway down", retryable=True))
    rt = await failover_runtime(database_url, tmp_path, scripted)
    try:
        result = await rt.generation.submit("ana", FRAME, provider="stability")
        await drain(rt, 1)
        job = await rt.generation.get(result.job.id)
        assert job is not None
        assert job.status is JobStatus.COMPLETED
        assert job.provider == "preview"  # who made it
        assert job.attempts == 1
        log = job.attempt_log or []
        assert [(a["provider"], a["outcome"]) for a in log] == [
            ("stability", "provider_down"),
            ("preview", "ok"),
        ]
        assert read_metadata(await rt.store.get(job.storage_key or ""))["provider"] == "preview"
    finally:
        await rt.aclose()


async def test_no_failover_for_a_blocked_prompt(
    database_url: str, tmp_path: Path, scripted: ScriptedProvider
) -> None:
    scripted.errors.append(ProviderError("content_blocked", "flagged", retryable=False))
    rt = await failover_runtime(database_url, tmp_path, scripted)
    try:
        result = await rt.generation.submit("ana", FRAME, provider="stability")
        await drain(rt, 1)
        job = await rt.generation.get(result.job.id)
        assert job is not None
        assert (job.status, job.error_code) == (JobStatus.FAILED, "content_blocked")
        assert [a["provider"] for a in job.attempt_log or []] == ["stability"]
    finally:
        await rt.aclose()
