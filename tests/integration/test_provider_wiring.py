"""Real providers as configured by environment names, end to end against their fakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from caverna.bootstrap import build_container, open_runtime, provider_health
from caverna.config import Settings
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.imaging import sniff_format
from caverna.storage.memory import MemoryStore
from tests.fakes import stability_server
from tests.fakes.openai_server import DEFAULT_API_KEY as OPENAI_KEY
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.stability_server import DEFAULT_API_KEY as STABILITY_KEY
from tests.fakes.stability_server import FakeStability


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_stability() -> AsyncIterator[FakeStability]:
    fake = FakeStability()
    await fake.start()
    yield fake
    await fake.stop()


async def run_jobs(settings: Settings, provider: str | None, jobs: int = 1) -> list[ImageJob]:
    runtime = await open_runtime(build_container(settings), store=MemoryStore())
    try:
        ids = []
        for seed in range(jobs):
            submitted = await runtime.generation.submit(
                "ana", {"frame": "onboarding/training", "seed": seed}, provider=provider
            )
            ids.append(submitted.job.id)
        await asyncio.wait_for(runtime.worker().run(asyncio.Event(), max_jobs=jobs), 60)
        done = []
        for job_id in ids:
            job = await runtime.jobs.get(job_id)
            assert job is not None
            done.append(job)
            if job.storage_key:
                assert sniff_format(await runtime.store.get(job.storage_key)) == "webp"
        return done
    finally:
        await runtime.aclose()


async def test_openai_by_its_usual_environment_names(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    settings = Settings(data_dir=tmp_path, image_processes=0)
    assert settings.provider_order == ["openai", "preview"]
    (job,) = await run_jobs(settings, None)
    assert job.status is JobStatus.COMPLETED
    assert job.provider == "openai"
    assert job.cost_usd is not None
    assert job.cost_usd > 0
    (request,) = [r for r in fake_openai.requests if r.path.endswith("/images/generations")]
    assert request.headers["Authorization"] == f"Bearer {OPENAI_KEY}"


async def test_a_provider_that_is_down_fails_over_to_the_next(
    fake_stability: FakeStability, tmp_path: Path
) -> None:
    fake_stability.fail_next(*[stability_server.server_error(503)] * 10)
    settings = Settings(
        data_dir=tmp_path,
        image_processes=0,
        stability_api_key=SecretStr(STABILITY_KEY),
        stability_base_url=fake_stability.base_url,
        providers="stability,preview",
        provider_retries=1,
    )
    jobs = await run_jobs(settings, "stability", jobs=2)
    for job in jobs:
        assert job.status is JobStatus.COMPLETED
        assert job.provider == "preview"
        outcomes = [(a["provider"], a["outcome"]) for a in job.attempt_log or []]
        assert outcomes == [("stability", "provider_down"), ("preview", "ok")]


async def test_provider_status_probes_and_reports_breakers(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        openai_api_key=SecretStr(OPENAI_KEY),
        openai_base_url=fake_openai.base_url,
    )
    runtime = await open_runtime(build_container(settings), store=MemoryStore())
    try:
        rows = await provider_health(runtime)
    finally:
        await runtime.aclose()
    assert rows == [
        {"provider": "openai", "healthy": True, "breaker": "closed", "detail": ""},
        {"provider": "preview", "healthy": None, "breaker": "closed", "detail": ""},
    ]
    json.dumps(rows)
