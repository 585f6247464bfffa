"""Shared fixtures: the shipped pack, the small test pack, and throwaway copies to break."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.brand.pack import BrandPack
from caverna.brand.registry import DEFAULT_PACK_ID, PackRegistry
from caverna.db.engine import create_engine
from caverna.db.migrate import upgrade
from caverna.db.models import Base
from caverna.prompting.engine import PromptEngine
from caverna.ratelimiting import RateLimiter, RateLimiterUnavailable

DATA = Path(__file__).parent / "data"
TEST_PACKS = DATA / "packs"
FOX = TEST_PACKS / "lumen-fox"


@pytest.fixture(scope="session")
def registry() -> PackRegistry:
    return PackRegistry([TEST_PACKS])


@pytest.fixture(scope="session")
def engine(registry: PackRegistry) -> PromptEngine:
    return PromptEngine(registry)


@pytest.fixture(scope="session")
def default_pack(registry: PackRegistry) -> BrandPack:
    return registry.get(DEFAULT_PACK_ID)


@pytest.fixture(scope="session")
def fox(registry: PackRegistry) -> BrandPack:
    return registry.get("lumen-fox")


PackEditor = Callable[[str, Callable[[Any], None]], None]


@pytest.fixture
def fox_copy(tmp_path: Path) -> tuple[Path, PackEditor]:
    """A private copy of the fox pack and a function that edits one of its YAML files."""
    target = tmp_path / "lumen-fox"
    shutil.copytree(FOX, target)

    def edit(file_name: str, change: Callable[[Any], None]) -> None:
        path = target / file_name
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")

    return target, edit


# --- databases ----------------------------------------------------------------------------------

POSTGRES_ADMIN_URL = os.environ.get(
    "CAVERNA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def run_blocking(coroutine: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _postgres_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""

    async def probe() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
        await connection.close()

    try:
        run_blocking(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}"
    return None


def require_service(reason: str | None) -> None:
    """Skip on a developer machine without the service; under CI a missing service fails."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: scale-out tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A throwaway database for this test run, migrated once."""
    require_service(_postgres_available())
    name = f"caverna_test_{os.getpid()}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    run_blocking(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    run_blocking(admin(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    run_blocking(upgrade(url))
    yield url
    run_blocking(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'caverna.db'}"
        await upgrade(url)
        yield url
        return
    yield request.getfixturevalue("database_url_postgres_clean")


@pytest.fixture
def database_url_postgres_clean(postgres_database: str) -> str:
    """The shared test database, emptied."""

    async def truncate() -> None:
        engine = create_engine(postgres_database)
        async with engine.begin() as connection:
            tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
            await connection.execute(text(f"TRUNCATE {tables} CASCADE"))
        await engine.dispose()

    run_blocking(truncate())
    return postgres_database


@pytest.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


# --- redis --------------------------------------------------------------------------------------

REDIS_URL = os.environ.get("CAVERNA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_available() -> str | None:
    """None when Redis answers, else the reason it does not."""

    async def probe() -> None:
        limiter = RateLimiter(REDIS_URL, timeout=3)
        try:
            await limiter.ping()
        finally:
            await limiter.aclose()

    try:
        run_blocking(probe())
    except RateLimiterUnavailable as exc:
        return f"Redis at {REDIS_URL} is not reachable: {exc}"
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis the shared rate-limit tests use; each test keeps to its own key namespace."""
    require_service(_redis_available())
    return REDIS_URL
