"""Chaos: 1,000 jobs through the whole pipeline while two HTTP providers misbehave.

About 30% of calls fail with server errors and 10% are rate limited (with a short Retry-After),
at random but reproducibly. Every job must end exactly once — completed with exactly one stored
image and thumbnail, or failed with a stable code — the breakers must open and close again, and
with one provider down, jobs fail over to the other and say so.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from caverna.bootstrap import Runtime, build_container, open_runtime
from caverna.config import Settings
from caverna.domain.jobs import JobStatus
from caverna.providers.base import ErrorKind
from caverna.providers.resilience import BreakerState, ResilientProvider
from tests.fakes import openai_server, stability_server
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.stability_server import FakeStability

JOBS = 1000
TAXONOMY = {kind.value for kind in ErrorKind}


def chaos_script(module: Any, calls: int, seed: int) -> list[Any]:
    rng = random.Random(seed)
    script = []
    for _ in range(calls):
        roll = rng.random()
        if roll < 0.30:
            script.append(module.server_error(rng.choice([500, 503])))
        elif roll < 0.40:
            script.append(module.rate_limited(retry_after="0"))
        else:
            script.append(module.Fault())
    return script


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeStability]]:
    openai, stability = FakeOpenAI(image_size=(32, 32)), FakeStability(image_size=(32, 32))
    await openai.start()
    await stability.start()
    yield openai, stability
    await openai.stop()
    await stability.stop()


async def drain(runtime: Runtime, expected: int, timeout: float = 240) -> None:
    stop = asyncio.Event()
    worker = asyncio.create_task(runtime.worker(concurrency=16).run(stop))
    try:
        async with asyncio.timeout(timeout):
            while True:
                counts = await runtime.jobs.counts()
                finished = counts.get("completed", 0) + counts.get("failed", 0)
                if finished >= expected:
                    return
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await worker


async def test_a_thousand_jobs_through_flaky_providers(
    fakes: tuple[FakeOpenAI, FakeStability], tmp_path: Path
) -> None:
    openai, stability = fakes
    openai.fail_next(*chaos_script(openai_server, 4 * JOBS, seed=1))
    stability.fail_next(*chaos_script(stability_server, 4 * JOBS, seed=2))
    settings = Settings(
        data_dir=tmp_path,
        image_processes=0,
        openai_api_key=SecretStr(openai_server.DEFAULT_API_KEY),
        openai_base_url=openai.base_url,
        stability_api_key=SecretStr(stability_server.DEFAULT_API_KEY),
        stability_base_url=stability.base_url,
        providers="stability,openai",
        provider_retries=2,
        provider_retry_budget_seconds=5,
        breaker_failures=3,
        breaker_open_seconds=0.2,
        max_attempts=5,
        worker_concurrency=16,
    )
    runtime = await open_runtime(build_container(settings))
    try:
        ids = []
        for index in range(JOBS):
            provider = "stability" if index % 2 else "openai"
            submitted = await runtime.generation.submit(
                "chaos", {"aspect_ratio": "1:1", "seed": index}, provider=provider
            )
            ids.append(submitted.job.id)
        await drain(runtime, JOBS)

        jobs = [await runtime.jobs.get(job_id) for job_id in ids]
        completed = [job for job in jobs if job is not None and job.status is JobStatus.COMPLETED]
        failed = [job for job in jobs if job is not None and job.status is JobStatus.FAILED]
        assert len(completed) + len(failed) == JOBS  # each job ended, once
        assert len(completed) >= 0.95 * JOBS
        assert {job.error_code for job in failed} <= TAXONOMY
        images = await runtime.store.list_keys("images/")
        assert sorted(images) == sorted(job.storage_key or "" for job in completed)  # none twice
        # thumbnails come after completion: the worker makes them when quiet, the rest now
        for _ in range(JOBS // 200 + 2):  # every batch settles its rows: done or failed
            if not await runtime.processor.derivatives.catch_up(200, parallel=4):
                break
        thumbs = await runtime.store.list_keys("thumbs/")
        assert sorted(thumbs) == sorted(job.thumbnail_key or "" for job in completed)
        assert sum(1 for job in completed if len(job.attempt_log or []) > 1) > 0

        breakers = [
            provider.breaker
            for provider in runtime.providers.values()
            if isinstance(provider, ResilientProvider)
        ]
        opened = [b for b in breakers if (BreakerState.CLOSED, BreakerState.OPEN) in b.transitions]
        assert opened, "no breaker opened under 30% server errors"
        assert all((BreakerState.HALF_OPEN, BreakerState.CLOSED) in b.transitions for b in opened)
    finally:
        await runtime.aclose()


async def test_jobs_fail_over_when_a_provider_is_down(
    fakes: tuple[FakeOpenAI, FakeStability], tmp_path: Path
) -> None:
    openai, stability = fakes
    stability_url = stability.base_url
    await stability.stop()  # down: connections are refused
    settings = Settings(
        data_dir=tmp_path,
        image_processes=0,
        openai_api_key=SecretStr(openai_server.DEFAULT_API_KEY),
        openai_base_url=openai.base_url,
        stability_api_key=SecretStr(stability_server.DEFAULT_API_KEY),
        stability_base_url=stability_url,
        providers="stability,openai",
        provider_retries=0,
    )
    runtime = await open_runtime(build_container(settings))
    try:
        ids = [
            (await runtime.generation.submit("chaos", {"seed": i}, provider="stability")).job.id
            for i in range(20)
        ]
        await drain(runtime, 20, timeout=60)
        assert await runtime.jobs.counts() == {"completed": 20}
        for job_id in ids:
            job = await runtime.jobs.get(job_id)
            assert job is not None
            assert job.provider == "openai"
            first = (job.attempt_log or [])[0]
            assert (first["provider"], first["outcome"]) == ("stability", "provider_down")
    finally:
        await runtime.aclose()
