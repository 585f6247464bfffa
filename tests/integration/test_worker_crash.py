"""A `caverna worker` process killed with SIGKILL mid-job: the job is found again and finished
by the next worker, with exactly one completed row and one stored image."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caverna.bootstrap import build_container, open_runtime
from caverna.config import Settings
from caverna.domain.jobs import JobStatus

DEADLINE = 60.0


def worker_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "caverna", "worker", "--max-jobs", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_sigkilled_worker_job_is_finished_by_the_next(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'caverna.db'}"
    else:
        database_url = request.getfixturevalue("database_url_postgres_clean")
    env = {
        **os.environ,
        "CAVERNA_DATA_DIR": str(tmp_path),
        "CAVERNA_DATABASE_URL": database_url,
        "CAVERNA_LEASE_SECONDS": "2",
        "CAVERNA_PREVIEW_LATENCY_MS": "20000",
    }
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    runtime = await open_runtime(build_container(settings))
    try:
        submitted = await runtime.generation.submit("ana", {"seed": 9})
        first = worker_process(env)
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                job = await runtime.jobs.get(submitted.job.id)
                assert job is not None
                if job.status is JobStatus.PROCESSING and job.progress > 0:
                    break
                assert time.monotonic() < deadline, "the first worker never started the job"
                assert first.poll() is None, first.stderr.read() if first.stderr else b""
                await asyncio.sleep(0.1)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        killed = await runtime.jobs.get(submitted.job.id)
        assert killed is not None
        assert killed.status is JobStatus.PROCESSING  # stranded, holding a lease

        second = worker_process({**env, "CAVERNA_PREVIEW_LATENCY_MS": "0"})
        try:
            _, stderr = await asyncio.to_thread(second.communicate, None, DEADLINE)
        finally:
            if second.poll() is None:
                second.kill()
        assert second.returncode == 0, stderr.decode()
        done = await runtime.jobs.get(submitted.job.id)
        assert done is not None
        assert done.status is JobStatus.COMPLETED
        assert done.attempts == 2
        assert await runtime.store.list_keys("images/") == [done.storage_key]
        assert await runtime.jobs.counts() == {"completed": 1}
    finally:
        await runtime.aclose()
