"""Commands that open the runtime refuse a shared database the code is ahead of, and say why."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from caverna.cli.app import app
from caverna.cli.runtime_scope import EXIT_FAILED
from tests.conftest import POSTGRES_ADMIN_URL, _postgres_available, require_service

runner = CliRunner()


async def admin(sql: str, url: str = POSTGRES_ADMIN_URL) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        return [str(row[0]) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    """A new PostgreSQL database with no tables: what an operator has before `db upgrade`."""
    require_service(_postgres_available())
    name = f"caverna_unmigrated_{os.getpid()}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize(
    "command",
    [["keys", "list"], ["report", "templates"], ["cache", "stats"]],
    ids=["keys", "report", "cache"],
)
def test_unmigrated_database_is_refused_with_the_step_to_take(
    command: list[str], empty_postgres: str, tmp_path: Path
) -> None:
    url = empty_postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
    result = runner.invoke(
        app,
        command,
        env={"CAVERNA_DATABASE_URL": url, "CAVERNA_DATA_DIR": str(tmp_path), "COLUMNS": "200"},
    )
    assert result.exit_code == EXIT_FAILED, result.output
    assert "caverna db upgrade" in result.output
    assert "Traceback" not in result.output
    # refused before anything was written: still no table at all
    tables = asyncio.run(
        admin("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", empty_postgres)
    )
    assert tables == []
