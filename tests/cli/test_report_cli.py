"""`caverna report sequence|templates`: tables, JSON and PNG files from the stored reports."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from caverna.bootstrap import build_container, open_runtime
from caverna.cli.app import app
from caverna.config import Settings
from caverna.providers.preview import PreviewProvider

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("CAVERNA_DATA_DIR", "CAVERNA_DATABASE_URL", "CAVERNA_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data"


def run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    env = {"COLUMNS": "200", "CAVERNA_DATA_DIR": str(data_dir)}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.output


def storyboard(data_dir: Path) -> uuid.UUID:
    """A completed, analysed onboarding run with one image approved and one rejected."""

    async def make() -> uuid.UUID:
        settings = Settings(data_dir=data_dir, image_processes=0)
        rt = await open_runtime(build_container(settings), providers={"preview": PreviewProvider()})
        try:
            run = await rt.generation.submit_sequence("ana", "onboarding", {"seed": 4})
            worker = rt.worker(concurrency=4)
            await asyncio.wait_for(worker.run(asyncio.Event(), max_jobs=len(run.jobs)), 60)
            await rt.processor.derivatives.catch_up()
            await rt.jobs.set_review(run.jobs[0].id, "approved", None, None, "ana")
            await rt.jobs.set_review(run.jobs[1].id, "rejected", "composition", None, "ana")
            return run.sequence_id
        finally:
            await rt.aclose()

    return asyncio.run(make())


def test_report_sequence_prints_a_table_json_and_a_contact_sheet(data_dir: Path) -> None:
    sequence_id = storyboard(data_dir)
    sheet = data_dir.parent / "out" / "sheet.png"

    code, stdout, output = run(
        data_dir, "report", "sequence", str(sequence_id), "--out", str(sheet)
    )
    assert code == 0, output
    assert f"sequence {sequence_id}" in stdout
    assert "no frame breaks continuity" in stdout
    with Image.open(io.BytesIO(sheet.read_bytes())) as image:
        assert image.format == "PNG"

    code, stdout, output = run(data_dir, "report", "sequence", str(sequence_id), "--json")
    assert code == 0, output
    body = json.loads(stdout)
    assert body["analysed"] == 8
    assert len(body["frames"]) == 8
    assert body["continuity"]["breaks"] == []

    code, _, output = run(data_dir, "report", "sequence", "not-a-uuid")
    assert code == 2
    assert "not a sequence id" in output
    code, _, output = run(data_dir, "report", "sequence", str(uuid.uuid4()))
    assert code == 1
    assert "no sequence" in output


def test_report_templates_prints_the_groups_and_writes_the_chart(data_dir: Path) -> None:
    storyboard(data_dir)
    chart = data_dir.parent / "chart.png"

    code, stdout, output = run(
        data_dir, "report", "templates", "--by", "provider", "--json", "--out", str(chart)
    )
    assert code == 0, output
    body = json.loads(stdout)
    assert body["by"] == ["provider"]
    (group,) = body["groups"]
    assert group["provider"] == "preview"
    assert (group["count"], group["reviewed"], group["approved"]) == (8, 2, 1)
    assert group["approval_rate"] == 0.5
    assert chart.read_bytes().startswith(b"\x89PNG")

    code, stdout, output = run(data_dir, "report", "templates")
    assert code == 0, output
    assert "approvals per group" in stdout
    assert "preview" in stdout

    code, _, output = run(data_dir, "report", "templates", "--by", "colour")
    assert code == 2
    assert "template_version" in output
