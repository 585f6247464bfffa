"""The studio over a real runtime through httpx's ASGI transport (a real browser is in e2e)."""

from __future__ import annotations

import re
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
from caverna.web.app import install_web

PASSWORD = "correct horse battery"


@dataclass
class Studio:
    client: httpx.AsyncClient
    runtime: Runtime

    async def login(self, user: str = "ana", password: str = PASSWORD) -> httpx.Response:
        page = await self.client.get("/login")
        token = csrf_of(page.text)
        return await self.client.post(
            "/login", data={"csrf_token": token, "user": user, "password": password}
        )

    async def csrf(self, path: str = "/generate") -> str:
        return csrf_of((await self.client.get(path)).text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


@pytest.fixture
async def studio(tmp_path: Path) -> AsyncIterator[Studio]:
    settings = Settings(data_dir=tmp_path, image_processes=0)
    container = build_container(settings)
    runtime = await open_runtime(container, providers={"preview": PreviewProvider()})
    for user, role in (("ana", Role.USER), ("admin", Role.ADMIN)):
        await runtime.accounts.create_key(user, role=role, actor="test")
        await runtime.accounts.set_password(user, PASSWORD, actor="test")
    app = create_app(container, runtime=runtime, options=ApiOptions(run_workers=False))
    install_web(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://studio.test") as client:
        yield Studio(client, runtime)
    await runtime.aclose()
