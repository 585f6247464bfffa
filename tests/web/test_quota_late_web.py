"""The studio answers a quota refused by the insert itself (a concurrent submit took the last
image after the early check) exactly like the early refusal: the same page, status and audit."""

from __future__ import annotations

import pytest

from caverna.domain.accounts import AuditAction, Principal, Role
from caverna.services.quotas import QuotaExceeded
from tests.web.conftest import Studio

FRAME = {"frame": "onboarding/lighting-the-torch"}
BROWSER = {"accept": "text/html"}


def lose_the_race(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    quotas = studio.runtime.quotas
    early_check = quotas.check
    seeds = iter(range(900, 1000))

    async def check_then_another_process_inserts(user_id: str, images: int = 1) -> None:
        await early_check(user_id, images)
        await studio.runtime.generation.submit(user_id, {**FRAME, "seed": next(seeds)})

    monkeypatch.setattr(quotas, "check", check_then_another_process_inserts)


async def test_the_generate_form_shows_a_late_refusal_like_an_early_one(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    await studio.runtime.accounts.set_quota("ana", daily_images=1, monthly_usd=None, actor="test")
    await studio.login()
    csrf = await studio.csrf()
    form = {"csrf_token": csrf, "frame": FRAME["frame"]}
    with monkeypatch.context() as patch:
        lose_the_race(studio, patch)
        late = await studio.client.post("/generate", data={**form, "seed": "1"}, headers=BROWSER)
    early = await studio.client.post("/generate", data={**form, "seed": "2"}, headers=BROWSER)
    assert late.status_code == early.status_code == 429
    assert late.headers["content-type"].startswith("text/html")
    for answer in (late, early):
        assert "Sua cota de imagens" in answer.text  # the form again, with the quota's message
    assert (await studio.runtime.jobs.counts())["queued"] == 1
    entries, _ = await studio.runtime.audit.query(action=AuditAction.QUOTA_REJECTED)
    assert len(entries) == 2
    assert entries[0].details == entries[1].details


async def test_regenerate_refused_late_is_the_quota_page_with_retry_after(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    await studio.runtime.accounts.set_quota("ana", daily_images=2, monthly_usd=None, actor="test")
    await studio.login()
    csrf = await studio.csrf()
    first = await studio.client.post(
        "/generate", data={"csrf_token": csrf, "seed": "1"}, headers=BROWSER
    )
    assert first.status_code == 303
    with monkeypatch.context() as patch:
        lose_the_race(studio, patch)
        again = await studio.client.post(
            f"{first.headers['location']}/regenerate",
            data={"csrf_token": csrf, "seed": "new"},
            headers=BROWSER,
        )
    assert again.status_code == 429
    assert again.headers["content-type"].startswith("text/html")
    assert "Sua cota de imagens" in again.text
    assert int(again.headers["retry-after"]) > 0
    assert (await studio.runtime.jobs.counts())["queued"] == 2


async def test_a_storyboard_refused_late_is_shown_on_the_storyboard_page(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    await studio.runtime.accounts.set_quota("ana", daily_images=8, monthly_usd=None, actor="test")
    await studio.login()
    csrf = await studio.csrf("/storyboard")
    with monkeypatch.context() as patch:
        lose_the_race(studio, patch)
        late = await studio.client.post(
            "/storyboard/generate",
            data={"csrf_token": csrf, "sequence_key": "onboarding"},
            headers=BROWSER,
        )
    assert late.status_code == 429
    assert late.headers["content-type"].startswith("text/html")
    assert (await studio.runtime.jobs.counts())["queued"] == 1
    assert await studio.runtime.jobs.recent_sequences("ana", 5) == []


async def test_an_admin_retry_of_a_failed_image_is_not_refused_by_the_owners_quota(
    studio: Studio,
) -> None:
    """The owner paid the quota for the image that failed; putting it right costs them none."""
    runtime = studio.runtime
    await runtime.accounts.set_quota("ana", daily_images=1, monthly_usd=None, actor="test")
    failed = await runtime.generation.submit("ana", {**FRAME, "seed": 5})
    claimed = await runtime.jobs.claim("test-worker", 60)
    assert claimed is not None
    assert await runtime.jobs.fail(failed.job.id, "test-worker", "provider_error", "no")
    await studio.login("admin")
    csrf = await studio.csrf("/admin/queue")
    retried = await studio.client.post(
        f"/admin/queue/{failed.job.id}/retry", data={"csrf_token": csrf}, headers=BROWSER
    )
    assert retried.status_code == 303
    assert "done=retried" in retried.headers["location"]
    assert (await runtime.jobs.counts()) == {"failed": 1, "queued": 1}
    # the owner's own regenerate of it is still held to the quota
    with pytest.raises(QuotaExceeded):
        await runtime.actions.regenerate(Principal("ana", Role.USER, None), failed.job.id)
