"""The pipeline commands as a user runs them, in a fresh folder: embedded SQLite and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caverna.cli.app import app
from caverna.imaging import read_metadata, sniff_format

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("CAVERNA_DATA_DIR", "CAVERNA_DATABASE_URL", "CAVERNA_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_generate_stores_the_image_under_the_working_folder(workdir: Path) -> None:
    code, output = run(
        "generate", "--frame", "onboarding/training", "--seed", "4", "--out", "exports", "--json"
    )
    assert code == 0, output
    result = json.loads(output)
    assert result["status"] == "completed"
    stored = Path(result["location"])
    assert stored.is_relative_to(workdir / "caverna-data" / "media")
    copied = Path(result["copied_to"])
    assert copied.parent == Path("exports")
    data = copied.read_bytes()
    assert data == stored.read_bytes()
    assert sniff_format(data) == "webp"
    assert read_metadata(data)["image_id"] == result["image_id"]
    assert (workdir / "caverna-data" / "caverna.db").exists()


def test_generate_again_reuses_the_image_unless_forced(workdir: Path) -> None:
    first = json.loads(run("generate", "--seed", "4", "--json")[1])
    second = json.loads(run("generate", "--seed", "4", "--json")[1])
    third = json.loads(run("generate", "--seed", "4", "--force", "--json")[1])
    assert first["image_id"] == second["image_id"]
    assert third["image_id"] != first["image_id"]


def test_generate_rejects_bad_input_with_exit_2_and_stores_nothing(workdir: Path) -> None:
    code, output = run("generate", "--pose", "flying", "--json")
    assert code == 2
    assert json.loads(output)["errors"][0]["code"] == "unknown_option"
    code, output = run("cache", "stats", "--json")
    assert json.loads(output)["entries"] == 0


def test_sequence_generate_writes_every_frame(workdir: Path) -> None:
    code, output = run("sequence", "generate", "--seed", "8", "--out", "board", "--json")
    assert code == 0, output
    result = json.loads(output)
    frames = result["frames"]
    assert len(frames) == 8
    assert {frame["status"] for frame in frames} == {"completed"}
    assert {frame["seed"] for frame in frames} == {8}
    names = sorted(path.name for path in (workdir / "board").iterdir())
    assert names[0] == "01-the-invitation.webp"
    assert names[-1] == "08-emerging-stronger.webp"


def test_sequence_generate_human_output_lists_the_files(workdir: Path) -> None:
    code, output = run("sequence", "generate", "--seed", "8", "--out", "board")
    assert code == 0, output
    assert "01-the-invitation.webp" in output
    assert "100%" in output


def test_worker_processes_what_was_left_queued(workdir: Path) -> None:
    code, _ = run("db", "upgrade")
    assert code == 0
    code, output = run("worker", "--max-jobs", "0")
    assert code == 0
    assert "stopped after 0 job(s)" in output


def test_cache_stats_and_prune(workdir: Path) -> None:
    run("generate", "--seed", "1", "--json")
    run("generate", "--seed", "1", "--provider", "preview", "--json")
    code, output = run("cache", "stats", "--json")
    assert code == 0
    stats = json.loads(output)
    assert stats["entries"] == 1
    assert stats["by_dialect"] == {"preview": 1}
    assert stats["hits"] >= 1
    code, output = run("cache", "prune")
    assert (code, output.strip()) == (0, "removed 0 cache entries")
    code, output = run("cache", "prune", "--all")
    assert (code, output.strip()) == (0, "removed 1 cache entry")


def test_unknown_provider_for_generation_lists_the_configured_ones(workdir: Path) -> None:
    code, output = run("generate", "--provider", "openai", "--json")
    assert code == 2
    error = json.loads(output)["errors"][0]
    assert error["code"] == "unknown_provider"
    assert error["allowed"] == ["preview"]
