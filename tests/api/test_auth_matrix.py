"""Every /api/v1 route refuses anonymous callers and revoked keys; admin routes refuse users."""

from __future__ import annotations

import re
import uuid

from caverna.api.app import create_app
from tests.api.conftest import Api, bearer

PUBLIC = {"/healthz", "/readyz", "/metrics", "/media/{key}", "/s/{token}"}


def api_routes(api: Api) -> list[tuple[str, str]]:
    """Every documented operation, with ids filled in."""
    schema = create_app(api.runtime.container, runtime=api.runtime).openapi()
    found: list[tuple[str, str]] = []
    for template, operations in schema["paths"].items():
        if template in PUBLIC:
            continue
        path = re.sub(r"\{[a-z_]*id\}", str(uuid.uuid4()), template)
        path = path.replace("{user_id}", "ana")
        found.extend((method.upper(), path) for method in sorted(operations))
    return found


async def test_the_matrix(api: Api) -> None:
    revoked = await api.runtime.accounts.create_key("ana", actor="test")
    await api.runtime.accounts.revoke_key(revoked.key.id, actor="test")
    routes = api_routes(api)
    assert len(routes) >= 25
    before = await api.runtime.jobs.counts()
    for method, path in routes:
        anonymous = await api.client.request(method, path, json={})
        assert anonymous.status_code == 401, (method, path)
        stale = await api.client.request(method, path, json={}, headers=bearer(revoked.token))
        assert stale.status_code == 401, (method, path)
        assert stale.json()["code"] == "invalid_key"
        if path.startswith("/api/v1/admin/"):
            user = await api.client.request(method, path, json={}, headers=api.ana)
            assert user.status_code == 403, (method, path)
            admin = await api.client.request(method, path, json={}, headers=api.admin)
            assert admin.status_code != 403, (method, path)
    assert await api.runtime.jobs.counts() == before
