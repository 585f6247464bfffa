"""Per-key request rates and per-user quotas: refused with 429 before anything is queued."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from caverna.api.app import ApiOptions, create_app
from caverna.bootstrap import build_container, open_runtime
from caverna.config import Settings
from caverna.domain.accounts import AuditAction
from caverna.providers.preview import PreviewProvider
from tests.api.conftest import Api, bearer

FRAME = {"frame": "onboarding/lighting-the-torch"}


@pytest.mark.parametrize("api", [{"api_rate_limit": "3/minute"}], indirect=True)
async def test_each_key_has_its_own_request_rate(api: Api) -> None:
    for _ in range(3):
        assert (await api.client.get("/api/v1/catalog", headers=api.ana)).status_code == 200
    refused = await api.client.get("/api/v1/catalog", headers=api.ana)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "3"
    # another key is not affected
    assert (await api.client.get("/api/v1/catalog", headers=api.bob)).status_code == 200


@pytest.mark.parametrize("api", [{"quota_daily_images": 2}], indirect=True)
async def test_daily_image_quota(api: Api) -> None:
    for seed in (1, 2):
        await api.generate(api.ana, **FRAME, seed=seed)
    refused = await api.client.post(
        "/api/v1/images/generate", json={**FRAME, "seed": 3}, headers=api.ana
    )
    assert refused.status_code == 429
    problem = refused.json()
    assert problem["code"] == "quota_exceeded"
    assert problem["quota"] == "daily_images"
    assert problem["limit"] == 2
    assert problem["resets_at"].endswith("T00:00:00+00:00")
    assert int(refused.headers["retry-after"]) > 0
    sequence = await api.client.post(
        "/api/v1/sequences/generate", json={"sequence": "onboarding"}, headers=api.bob
    )
    assert sequence.status_code == 429  # eight frames do not fit in two
    assert (await api.runtime.jobs.counts())["queued"] == 2
    entries, _ = await api.runtime.audit.query(action=AuditAction.QUOTA_REJECTED)
    assert {entry.actor for entry in entries} == {"ana", "bob"}
    # a user's own quota overrides the default
    await api.runtime.accounts.set_quota("ana", daily_images=5, monthly_usd=None, actor="test")
    await api.generate(api.ana, **FRAME, seed=3)


@pytest.mark.parametrize("api", [{"quota_monthly_usd": 0.0}], indirect=True)
async def test_monthly_spend_quota(api: Api) -> None:
    refused = await api.client.post("/api/v1/images/generate", json=FRAME, headers=api.ana)
    assert refused.status_code == 429
    assert refused.json()["quota"] == "monthly_usd"
    assert await api.runtime.jobs.counts() == {}


async def test_the_request_rate_is_shared_by_api_processes_through_redis(
    tmp_path: Path, redis_url: str
) -> None:
    """Two runtimes (as two API processes would have) over one database and one Redis."""
    settings = Settings(
        data_dir=tmp_path,
        image_processes=0,
        redis_url=redis_url,
        api_rate_limit="4/minute",
    )
    container = build_container(settings)
    first = await open_runtime(container, providers={"preview": PreviewProvider()})
    second = await open_runtime(container, providers={"preview": PreviewProvider()})
    try:
        key = await first.accounts.create_key(f"redis-{uuid.uuid4().hex[:8]}", actor="test")
        headers = bearer(key.token)
        statuses = []
        for index in range(6):
            runtime = (first, second)[index % 2]
            app = create_app(container, runtime=runtime, options=ApiOptions(run_workers=False))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                statuses.append((await client.get("/api/v1/catalog", headers=headers)).status_code)
        assert statuses == [200, 200, 200, 200, 429, 429]
    finally:
        await first.aclose()
        await second.aclose()
