"""Fixtures of the scale-out and fault tests: one moto S3 process for the session, and the
services every test needs checked first (skipped on a developer machine without them, failed
under CI=true)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_service, run_blocking
from tests.scaleout.harness import MotoS3, PrivateDatabase, moto_server


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_ready() -> None:
    require_service(run_blocking(PrivateDatabase.probe()))


@pytest.fixture(scope="session")
def redis_ready() -> None:
    missing = shutil.which("redis-server") is None
    require_service(
        "redis-server is not installed (Debian package redis-server)" if missing else None
    )


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path
