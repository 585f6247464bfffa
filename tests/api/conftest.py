"""An app over a real runtime (SQLite in a temp folder, local files, the preview provider),
called through httpx's ASGI transport, with three keys: an admin and two users."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from caverna.api.app import ApiOptions, create_app
from caverna.bootstrap import Runtime, build_container, open_runtime
from caverna.config import Settings
from caverna.domain.accounts import Role
from caverna.providers.preview import PreviewProvider


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    admin: dict[str, str]
    ana: dict[str, str]
    bob: dict[str, str]

    async def drain(self, jobs: int) -> None:
        """Run a worker in this process until `jobs` jobs have been handled."""
        stop = asyncio.Event()
        await asyncio.wait_for(self.runtime.worker(concurrency=4).run(stop, max_jobs=jobs), 60)

    async def generate(self, who: dict[str, str], **params: object) -> str:
        answer = await self.client.post("/api/v1/images/generate", json=params, headers=who)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["image_id"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    """Settings can be overridden per test: parametrize("api", [{...}], indirect=True)."""
    overrides = dict(getattr(request, "param", {}))
    if overrides.pop("database", "sqlite") == "postgresql":
        overrides["database_url"] = request.getfixturevalue("database_url_postgres_clean")
    settings = Settings(data_dir=tmp_path, image_processes=0, worker_concurrency=4, **overrides)
    container = build_container(settings)
    runtime = await open_runtime(container, providers={"preview": PreviewProvider()})
    app = create_app(
        container,
        runtime=runtime,
        options=ApiOptions(run_workers=False, events_poll_seconds=0.05),
    )
    keys = {}
    for user, role in (("admin", Role.ADMIN), ("ana", Role.USER), ("bob", Role.USER)):
        new = await runtime.accounts.create_key(user, role=role, actor="test")
        keys[user] = bearer(new.token)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://caverna.test") as client:
        yield Api(client, runtime, keys["admin"], keys["ana"], keys["bob"])
    await runtime.aclose()
