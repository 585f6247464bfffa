"""Blocked free text on the command line: exit code 2, like any other rejected input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caverna.cli.app import app

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("CAVERNA_DATA_DIR", "CAVERNA_DATABASE_URL", "CAVERNA_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("CAVERNA_MODERATION", "OPENAI_API_KEY", "CAVERNA_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.mark.parametrize("command", [("generate",), ("sequence", "generate")])
def test_blocked_scene_notes_exit_2_and_queue_nothing(
    workdir: Path, command: tuple[str, ...]
) -> None:
    code, output = run(*command, "--scene-notes", "Blood on the cave floor", "--json")
    assert code == 2, output
    (error,) = json.loads(output)["errors"]
    assert (error["code"], error["field"]) == ("content_blocked", "scene_notes")
    code, output = run("cache", "stats", "--json")
    assert json.loads(output)["entries"] == 0


def test_moderation_without_a_key_is_a_clear_settings_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAVERNA_MODERATION", "openai")
    code, output = run("generate", "--seed", "4", "--json")
    assert code != 0
    assert "OPENAI_API_KEY" in output
