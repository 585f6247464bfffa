"""Structured logs: JSON lines with the bound job context, and the pipeline's lines per image."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from caverna.bootstrap import Runtime, build_container, open_runtime
from caverna.cli.app import app
from caverna.config import Settings
from caverna.domain.jobs import JobStatus
from caverna.logs import JsonFormatter, TextFormatter, bind, bound, configure_logging
from caverna.providers.base import ErrorKind, provider_error
from caverna.providers.preview import PreviewProvider
from caverna.providers.resilience import BreakerSettings, CircuitBreaker
from caverna.services.processing import ProcessingOptions
from caverna.storage.memory import MemoryStore
from tests.doubles import ScriptedProvider

FRAME = {"frame": "onboarding/training", "seed": 3}
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging changes the root logger: put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def lines(root_logging: None) -> Lines:
    """JSON logging at DEBUG into a buffer; returns a function that reads the lines so far."""
    stream = io.StringIO()
    configure_logging("json", "DEBUG", stream=stream)
    return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_context_and_extra(lines: Lines) -> None:
    log = logging.getLogger("caverna.test")
    with bind(image_id="img-1", provider="openai", attempt=2, sequence_id=None):
        log.info("made %d images", 3, extra={"bytes": 1234, "provider": "stability"})
    (line,) = lines()
    assert list(line)[:4] == ["ts", "level", "logger", "msg"]
    ts = datetime.fromisoformat(line["ts"])
    assert ts.tzinfo is not None
    assert ts.utcoffset() == timedelta(0)
    assert line["ts"].endswith("Z")
    assert abs(datetime.now(UTC) - ts) < timedelta(seconds=5)
    assert (line["level"], line["logger"], line["msg"]) == ("INFO", "caverna.test", "made 3 images")
    assert (line["image_id"], line["attempt"], line["bytes"]) == ("img-1", 2, 1234)
    assert line["provider"] == "stability"  # the extra field is the more specific
    assert "sequence_id" not in line  # an unset field is left out, not null


def test_bind_nests_and_restores(lines: Lines) -> None:
    log = logging.getLogger("caverna.test")
    with bind(worker_id="w-1"):
        with bind(image_id="img-1"):
            assert bound() == {"worker_id": "w-1", "image_id": "img-1"}
            log.info("inner")
        log.info("outer")
    log.info("none")
    inner, outer, none = lines()
    assert (inner["worker_id"], inner["image_id"]) == ("w-1", "img-1")
    assert "image_id" not in outer
    assert "worker_id" not in none
    assert bound() == {}


async def test_concurrent_tasks_keep_their_own_context(lines: Lines) -> None:
    log = logging.getLogger("caverna.test")

    async def job(image_id: str) -> None:
        with bind(image_id=image_id):
            for step in range(3):
                await asyncio.sleep(0)  # interleave with the other job
                log.info("step", extra={"step": step, "expected": image_id})

    await asyncio.gather(job("img-a"), job("img-b"))
    got = [line for line in lines() if line["logger"] == "caverna.test"]
    assert len(got) == 6
    assert all(line["image_id"] == line["expected"] for line in got)


def test_an_exception_is_a_field(lines: Lines) -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("caverna.test").exception("it failed")
    (line,) = lines()
    assert (line["level"], line["msg"], line["exc_type"]) == ("ERROR", "it failed", "ValueError")
    assert "Traceback" in line["exc"]
    assert "ValueError: broken" in line["exc"]


def test_text_lines_carry_the_fields_and_levels_filter(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("text", "warning", stream=stream)
    log = logging.getLogger("caverna.test")
    with bind(image_id="img-1"):
        log.info("hidden")
        log.warning("shown", extra={"error_code": "timeout"})
    (line,) = stream.getvalue().splitlines()
    assert "WARNING" in line
    assert "caverna.test: shown [image_id=img-1 error_code=timeout]" in line


def test_configuring_again_replaces_the_handler(root_logging: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("text", "INFO", stream=first)
    configure_logging("json", "INFO", stream=second)
    logging.getLogger("caverna.test").info("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["msg"] == "once"
    with pytest.raises(ValueError, match="not a log level"):
        configure_logging("json", "LOUD")


def test_breaker_changes_are_logged(lines: Lines) -> None:
    now = [0.0]
    breaker = CircuitBreaker("sdwebui", BreakerSettings(1, 10), lambda: now[0])
    breaker.record_failure(ErrorKind.TIMEOUT)
    now[0] += 10
    breaker.before_call()
    breaker.record_success()
    got = [line for line in lines() if "breaker_to" in line]
    changes = [(line["level"], line["breaker_from"], line["breaker_to"]) for line in got]
    assert changes == [
        ("WARNING", "closed", "open"),
        ("INFO", "open", "half_open"),
        ("INFO", "half_open", "closed"),
    ]
    assert {line["provider"] for line in got} == {"sdwebui"}


def test_the_cli_applies_the_settings_quietly_for_commands_that_answer(
    root_logging: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAVERNA_LOG_FORMAT", "json")
    runner = CliRunner()
    assert runner.invoke(app, ["pack", "list", "--json"]).exit_code == 0
    root = logging.getLogger()
    (handler,) = [h for h in root.handlers if h.get_name() == "caverna"]
    assert isinstance(handler.formatter, JsonFormatter)
    assert root.level == logging.WARNING  # no level asked for: the JSON answer stays clean
    monkeypatch.setenv("CAVERNA_LOG_LEVEL", "debug")
    monkeypatch.setenv("CAVERNA_LOG_FORMAT", "text")
    assert runner.invoke(app, ["pack", "list", "--json"]).exit_code == 0
    (handler,) = [h for h in root.handlers if h.get_name() == "caverna"]
    assert isinstance(handler.formatter, TextFormatter)
    assert root.level == logging.DEBUG


# --- the pipeline -------------------------------------------------------------------------------


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[tuple[Runtime, ScriptedProvider]]:
    scripted = ScriptedProvider("stability")
    settings = Settings(data_dir=tmp_path, image_processes=0)
    rt = await open_runtime(
        build_container(settings),
        providers={"stability": scripted, "preview": PreviewProvider()},
        store=MemoryStore(),
        processing=ProcessingOptions(
            lease_seconds=0.6, retry_base_seconds=0.01, failover=("stability", "preview")
        ),
    )
    yield rt, scripted
    await rt.aclose()


def about(image_id: object, got: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The lines of one image, by message."""
    return {line["msg"]: line for line in got if line.get("image_id") == str(image_id)}


async def test_a_processed_job_logs_its_image_id_from_claim_to_completion(
    lines: Lines, runtime: tuple[Runtime, ScriptedProvider]
) -> None:
    rt, _ = runtime
    submitted = await rt.generation.submit("ana", FRAME, provider="preview")
    worker = rt.worker(worker_id="worker-7")
    await asyncio.wait_for(worker.run(asyncio.Event(), max_jobs=1), 60)
    job = await rt.generation.get(submitted.job.id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    mine = about(job.id, lines())
    claimed, completed = mine["job claimed"], mine["job completed"]
    for line in (claimed, completed):
        assert (line["worker_id"], line["provider"], line["attempt"]) == ("worker-7", "preview", 1)
    assert completed["bytes"] == job.bytes
    assert completed["latency_ms"] > 0
    assert completed["provider_latency_ms"] == job.provider_latency_ms


async def test_a_failover_logs_the_failed_attempt_and_the_next_provider(
    lines: Lines, runtime: tuple[Runtime, ScriptedProvider]
) -> None:
    rt, scripted = runtime
    scripted.errors = deque([provider_error(ErrorKind.PROVIDER_DOWN, "gone", retry_after=4.0)])
    submitted = await rt.generation.submit("ana", FRAME, provider="stability")
    await asyncio.wait_for(rt.worker().run(asyncio.Event(), max_jobs=1), 60)
    mine = about(submitted.job.id, lines())
    failed = mine["provider attempt failed"]
    assert (failed["provider"], failed["error_code"]) == ("stability", "provider_down")
    assert (failed["retryable"], failed["retry_after"]) == (True, 4.0)
    assert "gone" in failed["error_message"]
    assert (mine["failing over"]["provider"], mine["failing over"]["next"]) == (
        "stability",
        "preview",
    )
    assert mine["job completed"]["provider"] == "preview"


async def test_a_job_that_fails_for_good_says_why(
    lines: Lines, runtime: tuple[Runtime, ScriptedProvider]
) -> None:
    rt, scripted = runtime
    scripted.errors = deque([provider_error(ErrorKind.CONTENT_BLOCKED, "no")])
    submitted = await rt.generation.submit("ana", FRAME, provider="stability")
    await asyncio.wait_for(rt.worker().run(asyncio.Event(), max_jobs=1), 60)
    mine = about(submitted.job.id, lines())
    assert mine["job failed"]["error_code"] == "content_blocked"
    assert mine["job failed"]["level"] == "WARNING"
    assert "failing over" not in mine  # another provider cannot fix a blocked prompt


async def test_a_cancelled_job_logs_the_lost_lease(
    lines: Lines, runtime: tuple[Runtime, ScriptedProvider]
) -> None:
    rt, scripted = runtime
    scripted.delay = 2.0
    submitted = await rt.generation.submit("ana", FRAME, provider="stability")
    worker = asyncio.create_task(rt.worker().run(asyncio.Event(), max_jobs=1))
    await asyncio.wait_for(scripted.started.wait(), 10)
    await rt.generation.cancel(submitted.job.id)
    await asyncio.wait_for(worker, 30)
    lost = about(submitted.job.id, lines())["lease lost"]
    assert (lost["level"], lost["status"]) == ("WARNING", "cancelled")


async def test_frames_of_a_sequence_carry_its_id(
    lines: Lines, runtime: tuple[Runtime, ScriptedProvider]
) -> None:
    rt, _ = runtime
    submitted = await rt.generation.submit_sequence(
        "ana", "onboarding", {"seed": 5}, provider="preview"
    )
    await asyncio.wait_for(rt.worker().run(asyncio.Event(), max_jobs=1), 60)
    (completed,) = [line for line in lines() if line["msg"] == "job completed"]
    assert completed["sequence_id"] == str(submitted.sequence_id)
    assert completed["image_id"] in {str(job.id) for job in submitted.jobs}
