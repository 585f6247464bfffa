"""Admin routes: only admins; users, keys, quotas, audit log, stats; and the role matrix."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, bearer

ADMIN_ROUTES = [
    ("GET", "/api/v1/admin/users", None),
    ("POST", "/api/v1/admin/users/zoe/keys", {}),
    ("GET", "/api/v1/admin/keys", None),
    ("DELETE", "/api/v1/admin/keys/00000000-0000-0000-0000-000000000000", None),
    ("PUT", "/api/v1/admin/users/ana/quota", {"daily_images": 3}),
    ("PUT", "/api/v1/admin/users/ana/state", {"disabled": True}),
    ("GET", "/api/v1/admin/audit", None),
    ("GET", "/api/v1/admin/stats", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_routes_refuse_users_and_anonymous(
    api: Api, method: str, path: str, body: object
) -> None:
    user = await api.client.request(method, path, json=body, headers=api.ana)
    assert user.status_code == 403
    assert user.json()["code"] == "forbidden"
    nobody = await api.client.request(method, path, json=body)
    assert nobody.status_code == 401
    assert len(await api.runtime.accounts.list_users()) == 3
    assert (await api.runtime.accounts.get_user("ana")).quota_daily_images is None


async def test_keys_users_quotas_and_audit(api: Api) -> None:
    created = await api.client.post(
        "/api/v1/admin/users/zoe/keys", json={"name": "laptop"}, headers=api.admin
    )
    assert created.status_code == 201
    body = created.json()
    assert body["user_created"] is True
    token = body["token"]
    assert token.startswith("cav_")
    zoe = bearer(token)
    assert (await api.client.get("/api/v1/catalog", headers=zoe)).status_code == 200
    keys = (await api.client.get("/api/v1/admin/keys?user=zoe", headers=api.admin)).json()
    assert [key["name"] for key in keys] == ["laptop"]
    assert "token" not in keys[0]
    revoked = await api.client.delete(
        f"/api/v1/admin/keys/{body['key']['key_id']}", headers=api.admin
    )
    assert revoked.json()["revoked_at"] is not None
    assert (await api.client.get("/api/v1/catalog", headers=zoe)).status_code == 401

    quota = await api.client.put(
        "/api/v1/admin/users/ana/quota", json={"daily_images": 4}, headers=api.admin
    )
    assert quota.json()["quota_daily_images"] == 4
    bad = await api.client.put(
        "/api/v1/admin/users/ana/quota", json={"daily_images": -1}, headers=api.admin
    )
    assert bad.status_code == 422
    missing = await api.client.put(
        "/api/v1/admin/users/nobody/quota", json={"daily_images": 1}, headers=api.admin
    )
    assert missing.status_code == 404

    disabled = await api.client.put(
        "/api/v1/admin/users/bob/state", json={"disabled": True}, headers=api.admin
    )
    assert disabled.json()["disabled_at"] is not None
    assert (await api.client.get("/api/v1/catalog", headers=api.bob)).status_code == 401
    self_disable = await api.client.put(
        "/api/v1/admin/users/admin/state", json={"disabled": True}, headers=api.admin
    )
    assert self_disable.status_code == 409

    audit = (await api.client.get("/api/v1/admin/audit?limit=100", headers=api.admin)).json()
    actions = [entry["action"] for entry in audit["items"]]
    for expected in ("key_created", "key_revoked", "quota_changed", "user_updated", "auth_failed"):
        assert expected in actions
    only = await api.client.get(
        "/api/v1/admin/audit", params={"action": "key_revoked"}, headers=api.admin
    )
    assert {entry["action"] for entry in only.json()["items"]} == {"key_revoked"}
    wrong = await api.client.get("/api/v1/admin/audit?action=nope", headers=api.admin)
    assert wrong.status_code == 422


async def test_stats(api: Api) -> None:
    await api.generate(api.ana, frame="onboarding/lighting-the-torch", seed=1)
    await api.generate(api.bob, frame="onboarding/lighting-the-torch", seed=1)
    await api.drain(2)
    stats = (await api.client.get("/api/v1/admin/stats", headers=api.admin)).json()
    assert stats["jobs"] == {"completed": 2}
    assert stats["providers"][0]["provider"] == "preview"
    assert stats["providers"][0]["success_rate"] == 1.0
    assert {row["user_id"]: row["images"] for row in stats["users"]} == {"ana": 1, "bob": 1}
    assert stats["prompt_cache"]["misses"] >= 1
