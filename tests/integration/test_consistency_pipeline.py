"""Brand consistency in the pipeline: the derivatives pass stores a report on every completed
image, near-duplicates are found among the user's images, and the re-roll policy submits new
attempts within its limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from caverna.bootstrap import Runtime, build_container, open_runtime
from caverna.config import Settings
from caverna.consistency.report import ConsistencyReport
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.providers.preview import PreviewProvider
from caverna.services.consistency import reroll_seed
from caverna.services.processing import ProcessingOptions
from caverna.storage.memory import MemoryStore
from caverna.worker.loop import Worker, WorkerOptions
from tests.doubles import ScriptedProvider, solid_image

FRAME = {"frame": "onboarding/lighting-the-torch", "seed": 77}


async def open_pipeline(database_url: str, tmp_path: Path, **settings: Any) -> Runtime:
    options = Settings(database_url=database_url, data_dir=tmp_path, image_processes=0, **settings)
    # a bright green square: nothing like the pack's palette, so its score is low
    green = ScriptedProvider("stability", image=solid_image("WEBP", (640, 400), "#00FF00"))
    return await open_runtime(
        build_container(options),
        providers={"preview": PreviewProvider(), "stability": green},
        store=MemoryStore(),
        processing=ProcessingOptions(lease_seconds=5, retry_base_seconds=0.01),
    )


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'caverna.db'}"


@pytest.fixture
async def runtime(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await open_pipeline(sqlite_url, tmp_path)
    yield rt
    await rt.aclose()


async def drain(rt: Runtime, rounds: int = 8) -> None:
    """Run queued jobs, then the derivatives pass, until neither has work (re-rolls queue more)."""
    for _ in range(rounds):
        queued = (await rt.jobs.counts()).get("queued", 0)
        if queued:
            worker = Worker(
                jobs=rt.jobs,
                processor=rt.processor,
                providers=list(rt.providers),
                options=WorkerOptions(concurrency=2, derivatives=False, sweep_seconds=0.2),
            )
            await asyncio.wait_for(worker.run(asyncio.Event(), max_jobs=queued), 60)
        handled = await rt.processor.derivatives.catch_up()
        if not queued and not handled:
            return
    raise AssertionError(f"the pipeline was still busy after {rounds} rounds")


async def fresh(rt: Runtime, job_id: Any) -> ImageJob:
    job = await rt.jobs.get(job_id)
    assert job is not None
    return job


async def test_every_completed_image_gets_a_stored_report(
    database_url: str, tmp_path: Path
) -> None:
    rt = await open_pipeline(database_url, tmp_path)
    try:
        run = await rt.generation.submit_sequence("ana", "onboarding", {"seed": 5})
        single = await rt.generation.submit("ana", {"pose": "standing-ready", "seed": 3})
        await drain(rt)
        ids = [job.id for job in run.jobs] + [single.job.id]
        for image_id in ids:
            job = await fresh(rt, image_id)
            assert job.status is JobStatus.COMPLETED
            assert job.consistency is not None, job.frame_id
            report = ConsistencyReport.model_validate(job.consistency)
            assert job.consistency_score == report.overall_score
            assert job.phash == report.phash
            assert {c.name for c in report.checks} == {
                "format",
                "palette",
                "lighting",
                "duplicates",
            }
            assert report.check("format") is not None
            assert report.score_of("format") == 1.0, report.check("format")
        # a storyboard frame is checked against its frame's light, and compared with its siblings
        last = ConsistencyReport.model_validate((await fresh(rt, run.jobs[-1].id)).consistency)
        lighting = last.check("lighting")
        assert lighting is not None
        assert "side" in lighting.expected
        duplicates = last.check("duplicates")
        assert duplicates is not None
        assert duplicates.measured["compared"] >= 1
    finally:
        await rt.aclose()


async def test_a_forced_resubmission_with_the_same_seed_is_flagged_as_a_near_duplicate(
    runtime: Runtime,
) -> None:
    first = await runtime.generation.submit("ana", FRAME)
    await drain(runtime)
    again = await runtime.generation.submit("ana", FRAME, force=True)
    assert again.job.id != first.job.id
    await drain(runtime)

    report = ConsistencyReport.model_validate((await fresh(runtime, again.job.id)).consistency)
    duplicates = report.check("duplicates")
    assert duplicates is not None
    assert duplicates.status == "warn"
    assert [d["id"] for d in duplicates.measured["near_duplicates"]] == [str(first.job.id)]
    assert duplicates.score == 0.0
    # another user's identical image is not this user's duplicate
    other = await runtime.generation.submit("bob", FRAME)
    await drain(runtime)
    theirs = ConsistencyReport.model_validate((await fresh(runtime, other.job.id)).consistency)
    assert theirs.check("duplicates") is not None
    assert theirs.check("duplicates").status == "skipped"  # type: ignore[union-attr]


async def test_the_variant_is_stored_with_the_image(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAVERNA_PACK_PATH", str(Path(__file__).parents[1] / "data" / "packs"))
    rt = await open_pipeline(sqlite_url, tmp_path)
    try:
        ids = [
            (await rt.generation.submit("ana", {"pack": "lumen-fox-ab", "seed": s})).job.id
            for s in range(6)
        ]
        await drain(rt)
        variants = {(await fresh(rt, i)).variant for i in ids}
        assert variants == {"a", "b"}
    finally:
        await rt.aclose()


async def test_a_low_score_is_rerolled_up_to_the_maximum(sqlite_url: str, tmp_path: Path) -> None:
    rt = await open_pipeline(
        sqlite_url, tmp_path, reroll_below=0.99, reroll_max_attempts=3, reroll_budget_usd=1.0
    )
    try:
        original = await rt.generation.submit("ana", FRAME, provider="stability")
        await drain(rt)
        attempts = await rt.jobs.rerolls(original.job.id)
        assert [a.reroll_attempt for a in attempts] == [1, 2, 3]
        assert all(a.reroll_of == original.job.id for a in attempts)
        assert all(a.status is JobStatus.COMPLETED and a.consistency for a in attempts)
        seeds = [a.seed for a in attempts]
        assert seeds == [reroll_seed(original.job.id, n, 77) for n in (1, 2, 3)]
        assert 77 not in seeds
        assert len(set(seeds)) == 3
        assert await rt.jobs.counts() == {"completed": 4}
        assert rt.consistency is not None
        last = [d for i, d in rt.consistency.decisions if i == attempts[-1].id]
        assert [d.action for d in last] == ["stopped"]
    finally:
        await rt.aclose()


async def test_rerolls_stop_at_the_budget(sqlite_url: str, tmp_path: Path) -> None:
    # each image costs 0.01: two re-rolls fit in 0.025, a third would not
    rt = await open_pipeline(
        sqlite_url, tmp_path, reroll_below=0.99, reroll_max_attempts=5, reroll_budget_usd=0.025
    )
    try:
        original = await rt.generation.submit("ana", FRAME, provider="stability")
        await drain(rt)
        attempts = await rt.jobs.rerolls(original.job.id)
        assert [a.reroll_attempt for a in attempts] == [1, 2]
        assert rt.consistency is not None
        stop = [d for i, d in rt.consistency.decisions if i == attempts[-1].id]
        assert stop[0].action == "stopped"
        assert "budget" in stop[0].reason
    finally:
        await rt.aclose()


async def test_no_reroll_above_the_threshold_or_with_the_policy_off(
    sqlite_url: str, tmp_path: Path
) -> None:
    rt = await open_pipeline(sqlite_url, tmp_path, reroll_below=0.01, reroll_max_attempts=3)
    try:
        first = await rt.generation.submit("ana", FRAME)
        await drain(rt)
        assert await rt.jobs.rerolls(first.job.id) == []
    finally:
        await rt.aclose()
    rt = await open_pipeline(sqlite_url, tmp_path)  # the default: off
    try:
        second = await rt.generation.submit("ana", {**FRAME, "seed": 8}, provider="stability")
        await drain(rt)
        assert await rt.jobs.rerolls(second.job.id) == []
        assert (await fresh(rt, second.job.id)).consistency_score is not None
    finally:
        await rt.aclose()


async def test_rerolls_respect_the_users_quota(sqlite_url: str, tmp_path: Path) -> None:
    # one image a day: the original uses it up, so the policy stops instead of re-rolling
    rt = await open_pipeline(
        sqlite_url, tmp_path, reroll_below=0.99, reroll_max_attempts=3, quota_daily_images=1
    )
    try:
        original = await rt.generation.submit("ana", FRAME, provider="stability")
        await drain(rt)
        assert await rt.jobs.rerolls(original.job.id) == []
        assert rt.consistency is not None
        (decision,) = [d for i, d in rt.consistency.decisions if i == original.job.id]
        assert decision.action == "stopped"
        assert "quota" in decision.reason
    finally:
        await rt.aclose()
