"""`caverna webhooks secret` prints the key the workers sign with, in a fresh folder."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caverna.cli.app import app

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("CAVERNA_DATA_DIR", "CAVERNA_SECRET_KEY", "CAVERNA_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def secret(env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, ["webhooks", "secret"], env=env)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_the_key_is_derived_from_the_signing_secret_unless_set(workdir: Path) -> None:
    derived = secret()
    signing = (workdir / "caverna-data" / "secret.key").read_bytes().strip()
    expected = hmac.new(signing, b"caverna webhook signatures", hashlib.sha256).hexdigest()
    assert derived == expected
    assert signing.decode() not in derived
    assert secret() == derived  # stable: the signing secret is kept

    assert secret({"CAVERNA_SECRET_KEY": "another-signing-secret"}) != derived
    assert secret({"CAVERNA_WEBHOOK_SECRET": "shared-with-receivers"}) == "shared-with-receivers"
