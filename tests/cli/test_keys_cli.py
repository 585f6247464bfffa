"""`caverna keys` as an operator runs it, in a fresh folder with the embedded database."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from caverna.bootstrap import build_container, open_runtime
from caverna.cli.app import app
from caverna.config import Settings
from caverna.domain.accounts import AuditEntry, Principal, Role

runner = CliRunner()
TOKEN = re.compile(r"cav_[A-Za-z0-9_-]{43}")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("CAVERNA_DATA_DIR", "CAVERNA_DATABASE_URL", "CAVERNA_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def keys_json(*args: str) -> list[dict[str, Any]]:
    code, output = run("keys", "list", "--json", *args)
    assert code == 0, output
    keys: list[dict[str, Any]] = json.loads(output)
    return keys


def inspect(token: str) -> tuple[Principal | None, list[AuditEntry]]:
    """What the API would see: the principal behind a token, and the audit trail."""

    async def check() -> tuple[Principal | None, list[AuditEntry]]:
        runtime = await open_runtime(build_container(Settings()))
        try:
            entries, _ = await runtime.audit.query()
            return await runtime.accounts.authenticate(token), entries
        finally:
            await runtime.aclose()

    return asyncio.run(check())


def authenticate(token: str) -> Principal | None:
    return inspect(token)[0]


def test_create_prints_the_key_alone_on_the_last_line(workdir: Path) -> None:
    code, output = run("keys", "create", "--user", "alice", "--role", "admin", "--name", "laptop")
    assert code == 0, output
    *summary, last = output.rstrip("\n").splitlines()
    assert TOKEN.fullmatch(last)
    text = "\n".join(summary)
    assert "alice" in text
    assert last[:8] in text  # the prefix, to find the key in lists later
    assert last not in text
    principal, entries = inspect(last)
    assert principal is not None
    assert principal.user_id == "alice"
    assert principal.role is Role.ADMIN
    assert {(e.actor, e.action.value) for e in entries} == {
        ("cli", "user_created"),
        ("cli", "key_created"),
    }


def test_list_shows_keys_and_revoke_locks_one_out(workdir: Path) -> None:
    tokens = {}
    for user in ("alice", "bob"):
        code, output = run("keys", "create", "--user", user)
        assert code == 0, output
        tokens[user] = output.rstrip("\n").splitlines()[-1]

    code, table = run("keys", "list")
    assert code == 0, table
    listed = keys_json()
    assert {key["user_id"] for key in listed} == {"alice", "bob"}
    for key in listed:
        assert key["id"] in table
        assert key["prefix"] in table
        assert key["revoked_at"] is None
    for token in tokens.values():
        assert token not in table
    (bob,) = keys_json("--user", "bob")
    assert bob["prefix"] == tokens["bob"][:8]

    code, output = run("keys", "revoke", bob["id"])
    assert code == 0, output
    assert "revoked" in output
    (revoked,) = keys_json("--user", "bob")
    assert revoked["revoked_at"] is not None
    assert authenticate(tokens["bob"]) is None
    assert authenticate(tokens["alice"]) is not None

    code, again = run("keys", "revoke", bob["id"])
    assert code == 0, again
    assert keys_json("--user", "bob") == [revoked]


@pytest.mark.parametrize(
    ("args", "code", "where"),
    [
        (["--user", "alice", "--role", "root"], "invalid_choice", "--role"),
        (["--user", "Alice"], "invalid_characters", "--user"),
        (["--user", "a" * 65], "too_long", "--user"),
        (["--user", "alice", "--name", "x" * 101], "too_long", "name"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(
    workdir: Path, args: list[str], code: str, where: str
) -> None:
    exit_code, output = run("keys", "create", *args)
    assert exit_code == 2, output
    assert code in output
    assert where in output
    assert not TOKEN.search(output)
    assert keys_json() == []
    assert inspect("cav_" + "A" * 43)[1] == []  # nothing audited either


def test_bad_options_are_all_reported_before_the_database_is_opened(workdir: Path) -> None:
    exit_code, output = run("keys", "create", "--user", "Alice", "--role", "owner")
    assert exit_code == 2
    assert "invalid_characters" in output
    assert "did you mean 'alice'?" in output
    assert "allowed: user, admin" in output
    assert not (workdir / "caverna-data").exists()


def test_revoke_of_an_unknown_or_malformed_id_exits_2(workdir: Path) -> None:
    code, output = run("keys", "revoke", str(uuid.uuid4()))
    assert code == 2
    assert "not_found" in output
    code, output = run("keys", "revoke", "not-a-key")
    assert code == 2
    assert "invalid_type" in output
