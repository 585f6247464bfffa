"""The CLI submits through the same generation service as the API, so a configured quota holds
there too: a clear error and exit 1, nothing queued."""

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
    monkeypatch.setenv("CAVERNA_QUOTA_DAILY_IMAGES", "1")
    return tmp_path


def test_a_generate_over_the_daily_quota_exits_1_with_the_reason(workdir: Path) -> None:
    first = runner.invoke(app, ["generate", "--seed", "4", "--json"])
    assert first.exit_code == 0, first.output
    image_id = json.loads(first.output)["image_id"]
    refused = runner.invoke(app, ["generate", "--seed", "5", "--json"])
    assert refused.exit_code == 1
    assert "quota reached: 1 of 1 images today" in refused.output
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    # the same request again reuses its image, which costs no quota
    again = runner.invoke(app, ["generate", "--seed", "4", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["image_id"] == image_id
