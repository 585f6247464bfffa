"""`caverna worker --metrics-port`: a real worker process exports what it counts, answers
/healthz while its loop runs, and stops cleanly on SIGTERM; bad ports are refused up front."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from typer.testing import CliRunner

from caverna.bootstrap import build_container, open_runtime
from caverna.cli.app import app as cli
from caverna.config import Settings
from caverna.domain.jobs import JobStatus
from caverna.metrics_server import MetricsServer, QueueCollector
from caverna.queue.base import QueueBacklog
from tests.api.test_http_metrics import sample

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
JOB_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
METRICS_AT = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll state another process holds (a log, an HTTP answer): nothing there to await."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


def worker_environment(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAVERNA_")}
    env.update(
        CAVERNA_DATA_DIR=str(data_dir),
        CAVERNA_PROVIDERS="preview",
        CAVERNA_IMAGE_PROCESSES="0",
        CAVERNA_SECRET_KEY="worker-metrics-test-secret-0123",
    )
    return env


async def submit_one(data_dir: Path) -> str:
    """Queue one preview job in the worker's database (migrating it first), from this process."""
    settings = Settings(data_dir=data_dir, providers="preview", image_processes=0)
    runtime = await open_runtime(build_container(settings))
    try:
        submitted = await runtime.generation.submit("ana", {"seed": 11}, provider="preview")
        return str(submitted.job.id)
    finally:
        await runtime.aclose()


async def job_status(data_dir: Path, job_id: str) -> JobStatus:
    settings = Settings(data_dir=data_dir, providers="preview", image_processes=0)
    runtime = await open_runtime(build_container(settings))
    try:
        job = await runtime.jobs.get(uuid.UUID(job_id))
        assert job is not None
        return job.status
    finally:
        await runtime.aclose()


async def test_a_worker_process_exports_its_provider_metrics_and_health(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    job_id = await submit_one(data_dir)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "caverna", "worker", "--metrics-port", "0"],
            env=worker_environment(data_dir),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = 0

        async def announced() -> bool:
            nonlocal port
            assert process.poll() is None, log_path.read_text()
            found = METRICS_AT.search(log_path.read_text(errors="replace"))
            port = int(found[1]) if found else 0
            return bool(found)

        await until(announced, START_TIMEOUT, "the worker to announce its metrics endpoint")
        base = f"http://{LOOPBACK}:{port}"
        ok = {"provider": "preview", "outcome": "ok"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def scrape() -> str:
                async with http.get(f"{base}/metrics") as answer:
                    assert answer.status == 200
                    assert answer.headers["Content-Type"] == CONTENT_TYPE_LATEST
                    return await answer.text()

            async def provider_called() -> bool:
                text = await scrape()
                return sample(text, "caverna_provider_requests_total", **ok) >= 1

            async def queue_empty() -> bool:
                # the queue gauges are cached a few seconds: wait for a read after the job
                text = await scrape()
                states = [
                    sample(text, "caverna_queue_jobs", provider="preview", status=status)
                    for status in ("queued", "processing")
                ]
                return states == [0, 0] and "caverna_queue_jobs{" in text

            await until(provider_called, JOB_TIMEOUT, "the worker to call the preview provider")
            await until(queue_empty, JOB_TIMEOUT, "the queue gauges to show an empty queue")
            text = await scrape()
            assert sample(text, "caverna_provider_requests_total", **ok) == 1
            latency = {"provider": "preview"}
            assert sample(text, "caverna_provider_latency_seconds_count", **latency) == 1
            assert sample(text, "caverna_provider_breaker_state", **latency) == 0
            assert sample(text, "caverna_queue_oldest_age_seconds", provider="preview") == 0

            async with http.get(f"{base}/healthz") as answer:
                assert answer.status == 200
                assert await answer.json() == {"status": "ok"}
            async with http.get(f"{base}/nothing-here") as answer:
                assert answer.status == 404

        assert await job_status(data_dir, job_id) is JobStatus.COMPLETED
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_TIMEOUT) == 0
        output = log_path.read_text(errors="replace")
        assert "worker stopped after 1 job(s)" in output
        with socket.socket() as probe:  # the endpoint went with the process
            assert probe.connect_ex((LOOPBACK, port)) != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)


def run_worker(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    environment = {
        "CAVERNA_DATA_DIR": str(tmp_path / "data"),
        "CAVERNA_IMAGE_PROCESSES": "0",
        "COLUMNS": "300",  # the error box must not wrap its message
    }
    environment.update(env)
    result = CliRunner().invoke(cli, ["worker", *args], env=environment)
    return result.exit_code, result.output


def test_a_port_that_is_taken_stops_the_worker_before_it_claims_anything(
    tmp_path: Path,
) -> None:
    job_id = asyncio.run(submit_one(tmp_path / "data"))
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = run_worker(tmp_path, "--metrics-port", str(port), "--max-jobs", "1")
    assert code == 1, output
    assert f"error: cannot serve metrics on 127.0.0.1:{port}" in output
    assert "started" not in output
    assert asyncio.run(job_status(tmp_path / "data", job_id)) is JobStatus.QUEUED


@pytest.mark.parametrize(
    ("port", "reason"),
    [
        ("-1", "greater than or equal to 0"),
        ("65536", "less than or equal to 65535"),
        ("many", "a valid integer"),
    ],
)
def test_a_bad_port_option_is_refused_with_the_allowed_range(
    tmp_path: Path, port: str, reason: str
) -> None:
    code, output = run_worker(tmp_path, "--metrics-port", port)
    assert code == 2, output
    assert "Invalid value for '--metrics-port'" in output
    assert reason in output
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_a_bad_port_setting_names_the_variable(tmp_path: Path) -> None:
    code, output = run_worker(tmp_path, CAVERNA_WORKER_METRICS_PORT="70000")
    assert code == 2, output
    assert "configuration error: CAVERNA_WORKER_METRICS_PORT" in output
    assert "65535" in output


class OneBacklog:
    async def backlog(self) -> list[QueueBacklog]:
        return [QueueBacklog("preview", 2, 0, None)]


async def test_the_endpoint_says_stopped_once_the_loop_has_ended() -> None:
    registry = CollectorRegistry()
    collector = QueueCollector(OneBacklog())
    registry.register(collector)
    running = True
    server = MetricsServer(registry, alive=lambda: running, collector=collector)
    host, port = await server.start(LOOPBACK, 0)
    assert (host, port) == server.address
    assert port > 0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(f"http://{LOOPBACK}:{port}/healthz") as answer:
                assert answer.status == 200
            running = False
            async with http.get(f"http://{LOOPBACK}:{port}/healthz") as answer:
                assert answer.status == 503
                assert json.loads(await answer.text()) == {"status": "stopped"}
            async with http.get(f"http://{LOOPBACK}:{port}/metrics") as answer:
                text = await answer.text()
        assert sample(text, "caverna_queue_jobs", provider="preview", status="queued") == 2
    finally:
        await server.aclose()
    assert server.address is None


async def test_a_second_server_on_the_same_port_fails_and_leaves_nothing_open() -> None:
    first = MetricsServer(CollectorRegistry(), alive=lambda: True)
    _, port = await first.start(LOOPBACK, 0)
    try:
        second = MetricsServer(CollectorRegistry(), alive=lambda: True)
        with pytest.raises(OSError, match="address already in use"):
            await second.start(LOOPBACK, port)
        assert second.address is None
    finally:
        await first.aclose()
