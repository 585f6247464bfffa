"""A quota refused by the insert itself (another process queued the user's last image between the
early check and the insert) is answered exactly like the early refusal: 429 quota_exceeded as
problem+json with Retry-After, audited, nothing queued."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from caverna.domain.accounts import AuditAction
from tests.api.conftest import Api

FRAME = {"frame": "onboarding/lighting-the-torch"}
BACKENDS = pytest.mark.parametrize(
    "api",
    [{"quota_daily_images": 1}, {"quota_daily_images": 1, "database": "postgresql"}],
    indirect=True,
    ids=["sqlite", "postgresql"],
)


def lose_the_race(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """After each early check passes, another process queues the user's last image."""
    quotas = api.runtime.quotas
    early_check = quotas.check
    seeds = iter(range(900, 1000))

    async def check_then_another_process_inserts(user_id: str, images: int = 1) -> None:
        await early_check(user_id, images)
        await api.runtime.generation.submit(user_id, {**FRAME, "seed": next(seeds)})

    monkeypatch.setattr(quotas, "check", check_then_another_process_inserts)


def comparable(answer: httpx.Response) -> dict[str, Any]:
    body = dict(answer.json())
    body.pop("request_id", None)
    return body


@BACKENDS
async def test_the_late_refusal_is_the_same_429_as_the_early_one(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        lose_the_race(api, patch)
        late = await api.client.post(
            "/api/v1/images/generate", json={**FRAME, "seed": 1}, headers=api.ana
        )
    early = await api.client.post(
        "/api/v1/images/generate", json={**FRAME, "seed": 2}, headers=api.ana
    )
    assert late.status_code == early.status_code == 429
    assert late.headers["content-type"].startswith("application/problem+json")
    assert comparable(late) == comparable(early)
    assert comparable(late)["code"] == "quota_exceeded"
    assert comparable(late)["quota"] == "daily_images"
    assert abs(int(late.headers["retry-after"]) - int(early.headers["retry-after"])) <= 2
    assert int(late.headers["retry-after"]) > 0
    assert (await api.runtime.jobs.counts())["queued"] == 1  # only the other process's image
    entries, _ = await api.runtime.audit.query(action=AuditAction.QUOTA_REJECTED)
    assert len(entries) == 2
    assert {(entry.actor, entry.target) for entry in entries} == {("ana", "ana")}
    late_entry, early_entry = sorted(entries, key=lambda entry: entry.id)
    assert late_entry.details == early_entry.details
    assert late_entry.details["asked"] == 1


@BACKENDS
async def test_a_late_refusal_of_an_idempotent_request_frees_its_key(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {**api.ana, "Idempotency-Key": "late-1"}
    with monkeypatch.context() as patch:
        lose_the_race(api, patch)
        late = await api.client.post(
            "/api/v1/images/generate", json={**FRAME, "seed": 1}, headers=headers
        )
    assert late.status_code == 429
    assert late.json()["code"] == "quota_exceeded"
    assert "retry-after" in late.headers
    await api.runtime.accounts.set_quota("ana", daily_images=2, monthly_usd=None, actor="test")
    retried = await api.client.post(
        "/api/v1/images/generate", json={**FRAME, "seed": 1}, headers=headers
    )
    assert retried.status_code == 202, retried.text
    assert (await api.runtime.jobs.counts())["queued"] == 2


@BACKENDS
async def test_a_sequence_refused_late_queues_no_frame(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.runtime.accounts.set_quota("ana", daily_images=8, monthly_usd=None, actor="test")
    with monkeypatch.context() as patch:
        lose_the_race(api, patch)  # eight frames passed the early check; seven remain after it
        late = await api.client.post(
            "/api/v1/sequences/generate", json={"sequence": "onboarding"}, headers=api.ana
        )
    assert late.status_code == 429
    problem = late.json()
    assert (problem["code"], problem["used"], problem["limit"]) == ("quota_exceeded", 1, 8)
    assert "retry-after" in late.headers
    assert (await api.runtime.jobs.counts())["queued"] == 1
    assert await api.runtime.jobs.recent_sequences("ana", 5) == []
    entries, _ = await api.runtime.audit.query(action=AuditAction.QUOTA_REJECTED)
    assert [entry.details["asked"] for entry in entries] == [8]
