"""Admin pages through the app: access, users and keys, providers, queue, bulk, audit, usage."""

from __future__ import annotations

import re
import uuid

from caverna.domain.accounts import AuditAction
from caverna.domain.jobs import JobStatus
from caverna.providers.base import ErrorKind
from caverna.providers.preview import PreviewProvider
from caverna.providers.resilience import ResilientProvider
from tests.web.conftest import PASSWORD, Studio

PAGES = (
    "/admin",
    "/admin/users",
    "/admin/users/ana",
    "/admin/providers",
    "/admin/queue",
    "/admin/bulk",
    "/admin/audit",
    "/admin/usage",
)
FRAME = "onboarding/lighting-the-torch"


async def _submit(studio: Studio, user: str, seed: int) -> uuid.UUID:
    result = await studio.runtime.generation.submit(user, {"frame": FRAME, "seed": seed})
    return result.job.id


async def _fail(studio: Studio, code: str, message: str) -> uuid.UUID:
    job_id = await _submit(studio, "ana", 77)
    claimed = await studio.runtime.jobs.claim("test-worker", 60)
    assert claimed is not None
    assert claimed.id == job_id
    assert await studio.runtime.jobs.fail(job_id, "test-worker", code, message)
    return job_id


def _svg(html: str, chart_id: str) -> str:
    found = re.search(rf'<svg class="chart" id="{chart_id}".*?</svg>', html, re.S)
    assert found is not None, html
    return found.group(0)


async def test_every_admin_page_needs_a_session_and_the_admin_role(studio: Studio) -> None:
    for path in PAGES:
        bounce = await studio.client.get(path)
        assert bounce.status_code == 303, path
        assert bounce.headers["location"].startswith("/login?next=%2Fadmin")
    probe = await studio.client.get(f"/web/admin/bulk/{uuid.uuid4()}")
    assert probe.status_code == 401

    await studio.login("ana")
    await studio.client.get("/lang/en?next=/generate")
    for path in PAGES:
        refused = await studio.client.get(path)
        assert refused.status_code == 403, path
        assert "This page is for admins." in refused.text
    assert (await studio.client.get(f"/web/admin/bulk/{uuid.uuid4()}")).status_code == 403
    csrf = await studio.csrf()
    posted = await studio.client.post(
        "/admin/keys", data={"csrf_token": csrf, "user_id": "eve", "role": "admin"}
    )
    assert posted.status_code == 403
    assert await studio.runtime.accounts.list_keys("eve") == []
    nav = await studio.client.get("/generate")
    assert 'href="/admin"' not in nav.text

    studio.client.cookies.clear()
    await studio.login("admin")
    for path in PAGES:
        answer = await studio.client.get(path)
        assert answer.status_code == 200, path
        assert 'aria-current="page"' in answer.text
        assert "/static/admin.css" in answer.text
    assert (await studio.client.get("/admin/users/nobody")).status_code == 404


async def test_a_new_key_is_shown_once_and_works_for_the_api(studio: Studio) -> None:
    await studio.login("admin")
    csrf = await studio.csrf("/admin")
    created = await studio.client.post(
        "/admin/keys", data={"csrf_token": csrf, "user_id": "cris", "role": "", "name": "ci"}
    )
    assert created.status_code == 200
    assert created.headers["cache-control"] == "no-store"
    token = re.search(r'id="new-key" value="(cav_[^"]+)"', created.text)
    assert token is not None
    assert 'data-copy="#new-key"' in created.text
    api = await studio.client.get(
        "/api/v1/catalog", headers={"Authorization": f"Bearer {token.group(1)}"}
    )
    assert api.status_code == 200
    again = await studio.client.get("/admin/users/cris")
    assert token.group(1) not in again.text
    assert token.group(1)[:8] in again.text  # the prefix identifies it
    listed = await studio.client.get("/admin/users")
    assert '<a href="/admin/users/cris">cris</a>' in listed.text

    bad = await studio.client.post(
        "/admin/keys", data={"csrf_token": csrf, "user_id": "Not Valid", "name": ""}
    )
    assert bad.status_code == 422
    assert 'role="alert"' in bad.text
    assert "user_id" in bad.text
    clash = await studio.client.post(
        "/admin/keys", data={"csrf_token": csrf, "user_id": "ana", "role": "admin"}
    )
    assert clash.status_code == 422  # a key request never changes a role
    unknown = await studio.client.post(
        "/admin/keys", data={"csrf_token": csrf, "user_id": "dora", "role": "root"}
    )
    assert unknown.status_code == 422
    assert await studio.runtime.accounts.list_keys("dora") == []


async def test_revoke_quota_disable_and_password_are_audited(studio: Studio) -> None:
    runtime = studio.runtime
    key = await runtime.accounts.create_key("ana", name="laptop", actor="test")
    await studio.login("admin")
    csrf = await studio.csrf("/admin")

    revoked = await studio.client.post(
        f"/admin/keys/{key.key.id}/revoke", data={"csrf_token": csrf}
    )
    assert revoked.status_code == 303
    assert revoked.headers["location"] == "/admin/users/ana?done=key_revoked"
    assert 'role="status"' in (await studio.client.get(revoked.headers["location"])).text
    api = await studio.client.get(
        "/api/v1/catalog", headers={"Authorization": f"Bearer {key.token}"}
    )
    assert api.status_code == 401

    quota = await studio.client.post(
        "/admin/users/ana/quota",
        data={"csrf_token": csrf, "daily_images": "5", "monthly_usd": "2,50"},
    )
    assert quota.status_code == 303
    user = await runtime.accounts.get_user("ana")
    assert (user.quota_daily_images, user.quota_monthly_usd) == (5, 2.5)
    wrong = await studio.client.post(
        "/admin/users/ana/quota", data={"csrf_token": csrf, "daily_images": "many"}
    )
    assert wrong.status_code == 422
    lifted = await studio.client.post(
        "/admin/users/ana/quota", data={"csrf_token": csrf, "daily_images": "", "monthly_usd": ""}
    )
    assert lifted.status_code == 303
    assert (await runtime.accounts.get_user("ana")).quota_daily_images is None

    disabled = await studio.client.post(
        "/admin/users/ana/state", data={"csrf_token": csrf, "disabled": "1"}
    )
    assert disabled.headers["location"] == "/admin/users/ana?done=user_disabled"
    assert (await runtime.accounts.get_user("ana")).disabled
    assert await runtime.accounts.login("ana", PASSWORD) is None
    table = await studio.client.get("/admin/users")
    assert "status-failed" in table.text
    await studio.client.post("/admin/users/ana/state", data={"csrf_token": csrf, "disabled": "0"})
    assert not (await runtime.accounts.get_user("ana")).disabled
    myself = await studio.client.post(
        "/admin/users/admin/state", data={"csrf_token": csrf, "disabled": "1"}
    )
    assert myself.status_code == 409
    assert not (await runtime.accounts.get_user("admin")).disabled

    short = await studio.client.post(
        "/admin/users/ana/password", data={"csrf_token": csrf, "password": "x"}
    )
    assert short.status_code == 422
    changed = await studio.client.post(
        "/admin/users/ana/password",
        data={"csrf_token": csrf, "password": "a brand new long passphrase"},
    )
    assert changed.status_code == 303
    assert await runtime.accounts.login("ana", "a brand new long passphrase") is not None

    log = await studio.client.get("/admin/audit?actor=admin")
    for action in ("key_revoked", "quota_changed", "user_updated"):
        assert f"<code>{action}</code>" in log.text
    only = await studio.client.get("/admin/audit?action=key_revoked")
    assert only.text.count('class="audit-entry"') == 1
    assert str(key.key.id) in only.text


async def test_queue_shows_failures_retries_and_cancels(studio: Studio) -> None:
    runtime = studio.runtime
    failed_id = await _fail(studio, "provider_error", "the provider said no")
    queued_id = await _submit(studio, "ana", 3)
    await studio.login("admin")
    page = await studio.client.get("/admin/queue")
    assert "provider_error" in page.text
    assert "the provider said no" in page.text
    assert f"/admin/queue/{failed_id}/retry" in page.text
    assert f"/admin/queue/{queued_id}/cancel" in page.text
    assert "Nada está em andamento agora." in page.text  # nothing is processing
    csrf = await studio.csrf("/admin/queue")

    retried = await studio.client.post(f"/admin/queue/{failed_id}/retry", data={"csrf_token": csrf})
    assert retried.status_code == 303
    new_id = uuid.UUID(retried.headers["location"].rsplit("image=", 1)[1])
    assert new_id != failed_id
    new = await runtime.jobs.get(new_id)
    old = await runtime.jobs.get(failed_id)
    assert new is not None
    assert old is not None
    assert (new.status, new.user_id, new.seed) == (JobStatus.QUEUED, "ana", old.seed)
    assert old.status is JobStatus.FAILED  # kept as it was, for the record
    shown = await studio.client.get(retried.headers["location"])
    assert f'href="/images/{new_id}"' in shown.text
    # newest first: the retry is listed above the job queued before it
    assert shown.text.index(f"/admin/queue/{new_id}/cancel") < shown.text.index(
        f"/admin/queue/{queued_id}/cancel"
    )
    not_failed = await studio.client.post(
        f"/admin/queue/{queued_id}/retry", data={"csrf_token": csrf}
    )
    assert not_failed.headers["location"] == "/admin/queue?done=not_retryable"

    cancelled = await studio.client.post(
        f"/admin/queue/{queued_id}/cancel", data={"csrf_token": csrf}
    )
    assert cancelled.headers["location"] == "/admin/queue?done=cancelled"
    job = await runtime.jobs.get(queued_id)
    assert job is not None
    assert job.status is JobStatus.CANCELLED
    twice = await studio.client.post(f"/admin/queue/{queued_id}/cancel", data={"csrf_token": csrf})
    assert twice.headers["location"] == "/admin/queue?done=not_cancellable"
    entries, _ = await runtime.audit.query(action=AuditAction.IMAGE_CANCELLED)
    assert [(e.actor, e.target) for e in entries] == [("admin", str(queued_id))]
    missing = await studio.client.post(
        f"/admin/queue/{uuid.uuid4()}/cancel", data={"csrf_token": csrf}
    )
    assert missing.status_code == 404


async def test_providers_show_probe_and_breaker_state(studio: Studio) -> None:
    shaky = ResilientProvider(PreviewProvider())
    for _ in range(shaky.breaker.settings.failure_threshold):
        shaky.breaker.record_failure(ErrorKind.PROVIDER_DOWN)
    studio.runtime.providers["shaky"] = shaky
    await studio.login("admin")
    page = await studio.client.get("/admin/providers")
    assert page.status_code == 200
    assert '<th scope="row">preview</th>' in page.text
    assert '<th scope="row">shaky</th>' in page.text
    assert 'data-breaker="open"' in page.text
    assert 'data-breaker="none"' in page.text


async def test_bulk_delete_by_filter_shows_progress_until_done(studio: Studio) -> None:
    runtime = studio.runtime
    ana_jobs = [await _submit(studio, "ana", seed) for seed in (1, 2, 3)]
    keep = await _submit(studio, "admin", 1)
    await studio.login("admin")
    csrf = await studio.csrf("/admin/bulk")

    unfiltered = await studio.client.post(
        "/admin/bulk", data={"csrf_token": csrf, "action": "delete"}
    )
    assert unfiltered.status_code == 422
    assert 'role="alert"' in unfiltered.text
    bad = await studio.client.post(
        "/admin/bulk", data={"csrf_token": csrf, "action": "explode", "pose": "moonwalk"}
    )
    assert bad.status_code == 422
    assert "filters.pose" in bad.text
    assert await runtime.bulk.recent() == []

    started = await studio.client.post(
        "/admin/bulk", data={"csrf_token": csrf, "action": "delete", "user": "ana", "frame": FRAME}
    )
    assert started.status_code == 303
    [operation] = await runtime.bulk.recent()
    assert operation.filters == {"user": "ana", "frame": FRAME}
    page = await studio.client.get("/admin/bulk")
    assert f'data-operation="{operation.id}" data-status="queued"' in page.text
    assert "<progress" in page.text
    assert "/static/admin.js" in page.text
    before = await studio.client.get(f"/web/admin/bulk/{operation.id}")
    assert before.json()["status"] == "queued"

    assert await runtime.bulk.run_once()
    after = (await studio.client.get(f"/web/admin/bulk/{operation.id}")).json()
    assert (after["status"], after["progress"], after["done"], after["total"]) == (
        "completed",
        1.0,
        3,
        3,
    )
    for job_id in ana_jobs:
        job = await runtime.jobs.get(job_id)
        assert job is not None
        assert job.status is JobStatus.DELETED
    kept = await runtime.jobs.get(keep)
    assert kept is not None
    assert kept.status is not JobStatus.DELETED
    done = await studio.client.get("/admin/bulk")
    assert 'data-status="completed"' in done.text
    assert (await studio.client.get(f"/web/admin/bulk/{uuid.uuid4()}")).status_code == 404


async def test_audit_filters_dates_and_pages(studio: Studio) -> None:
    runtime = studio.runtime
    for number in range(55):
        await runtime.audit.record("robot", AuditAction.SHARE_CREATED, f"image-{number}")
    await studio.login("admin")
    first = await studio.client.get("/admin/audit?actor=robot")
    assert first.text.count('class="audit-entry"') == 50
    following = re.search(r'href="(/admin/audit\?[^"]*cursor=[^"]+)" rel="next"', first.text)
    assert following is not None
    assert "actor=robot" in following.group(1)
    second = await studio.client.get(following.group(1).replace("&amp;", "&"))
    assert second.text.count('class="audit-entry"') == 5
    assert 'rel="next"' not in second.text
    assert "image-0" in second.text

    target = await studio.client.get("/admin/audit?target=image-7")
    assert target.text.count('class="audit-entry"') == 1
    today = runtime.clock().date().isoformat()
    dated = await studio.client.get(f"/admin/audit?actor=robot&since={today}&until={today}")
    assert dated.text.count('class="audit-entry"') == 50
    future = await studio.client.get("/admin/audit?since=2999-01-01")
    assert 'class="empty"' in future.text
    wrong = await studio.client.get("/admin/audit?since=yesterday")
    assert wrong.status_code == 422
    assert 'role="alert"' in wrong.text
    unknown = await studio.client.get("/admin/audit?action=nope")
    assert unknown.status_code == 422


async def test_usage_draws_one_bar_per_provider_and_user(studio: Studio) -> None:
    await studio.login("admin")
    empty = await studio.client.get("/admin/usage")
    assert 'class="empty"' in empty.text
    for user, seed in (("ana", 1), ("ana", 2), ("admin", 1)):
        await _submit(studio, user, seed)
    page = await studio.client.get("/admin/usage")
    providers = _svg(page.text, "chart-providers")
    users = _svg(page.text, "chart-users")
    assert providers.count('class="bar"') == 1
    assert users.count('class="bar"') == 2
    assert 'role="img"' in users
    assert 'aria-labelledby="chart-users-title chart-users-desc"' in users
    assert "<desc" in users
    assert "ana: 2" in users
    cost = await studio.client.get("/admin/usage?metric=cost")
    assert _svg(cost.text, "chart-users").count('class="bar"') == 2
    assert "US$" in cost.text


async def test_admin_forms_without_the_csrf_token_are_refused(studio: Studio) -> None:
    job_id = await _submit(studio, "ana", 1)
    await studio.login("admin")
    for path, data in (
        ("/admin/keys", {"user_id": "mallory"}),
        ("/admin/users/ana/state", {"disabled": "1"}),
        ("/admin/users/ana/quota", {"daily_images": "0"}),
        ("/admin/users/ana/password", {"password": "a brand new long passphrase"}),
        (f"/admin/queue/{job_id}/cancel", {}),
        ("/admin/bulk", {"action": "delete", "everything": "1"}),
    ):
        for token in (None, "forged"):
            sent = data if token is None else {**data, "csrf_token": token}
            answer = await studio.client.post(path, data=sent)
            assert answer.status_code == 403, path
    assert await studio.runtime.accounts.list_keys("mallory") == []
    ana = await studio.runtime.accounts.get_user("ana")
    assert not ana.disabled
    assert ana.quota_daily_images is None
    job = await studio.runtime.jobs.get(job_id)
    assert job is not None
    assert job.status is JobStatus.QUEUED
    assert await studio.runtime.bulk.recent() == []
