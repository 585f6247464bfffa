"""The image endpoints through the ASGI app: generate, follow, read, list, cancel, delete, redo."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from caverna.domain.accounts import AuditAction
from tests.api.conftest import Api

FRAME = {"frame": "onboarding/lighting-the-torch", "seed": 77}
PROBLEM_JSON = "application/problem+json"
BOTH_DATABASES = pytest.mark.parametrize(
    "api", [{"database": "sqlite"}, {"database": "postgresql"}], indirect=True
)


async def test_generate_then_follow_to_a_stored_image(api: Api) -> None:
    answer = await api.client.post("/api/v1/images/generate", json=FRAME, headers=api.ana)
    assert answer.status_code == 202
    body = answer.json()
    image_id = body["image_id"]
    assert body["status"] == "queued"
    assert body["status_url"] == f"/api/v1/images/{image_id}/status"
    assert answer.headers["location"] == f"/api/v1/images/{image_id}"

    queued = (await api.client.get(body["status_url"], headers=api.ana)).json()
    assert queued["status"] == "queued"
    assert queued["url"] is None

    await api.drain(1)
    done = (await api.client.get(body["status_url"], headers=api.ana)).json()
    assert done["status"] == "completed"
    assert done["progress"] == 1.0
    assert done["eta_seconds"] == 0.0
    image = await api.client.get(done["url"])  # a signed link: no key needed
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/webp"
    assert image.content[:4] == b"RIFF"
    etag = image.headers["etag"]
    assert "immutable" in image.headers["cache-control"]
    again = await api.client.get(done["url"], headers={"If-None-Match": etag})
    assert again.status_code == 304
    thumb = await api.client.get(done["thumbnail_url"])
    assert thumb.status_code == 200

    detail = (await api.client.get(f"/api/v1/images/{image_id}", headers=api.ana)).json()
    assert detail["seed"] == 77
    assert detail["frame_id"] == "onboarding/lighting-the-torch"
    assert detail["provider"] == "preview"
    assert detail["template_version"]
    assert detail["sha256"]
    assert detail["bytes"] == len(image.content)


async def test_invalid_parameters_are_coded_and_change_nothing(api: Api) -> None:
    before = await api.runtime.jobs.counts()
    answer = await api.client.post(
        "/api/v1/images/generate",
        json={"pose": "moonwalk", "outfit": "space-suit"},
        headers=api.ana,
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"] == PROBLEM_JSON
    problem = answer.json()
    assert problem["code"] == "invalid_parameters"
    assert problem["status"] == 422
    fields = {error["field"]: error for error in problem["errors"]}
    assert fields["pose"]["code"] == "unknown_option"
    assert "arms-crossed-confident" in fields["pose"]["allowed"] or fields["pose"]["allowed"]
    assert fields["outfit"]["code"] == "unknown_option"
    assert await api.runtime.jobs.counts() == before


async def test_wrong_types_unknown_fields_and_bad_json(api: Api) -> None:
    wrong = await api.client.post(
        "/api/v1/images/generate", json={"seed": "12", "colour": "red"}, headers=api.ana
    )
    assert wrong.status_code == 422
    codes = {error["field"]: error["code"] for error in wrong.json()["errors"]}
    assert codes == {"seed": "invalid_type", "colour": "unknown_field"}

    broken = await api.client.post(
        "/api/v1/images/generate",
        content=b'{"seed": 1',
        headers={**api.ana, "content-type": "application/json"},
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "malformed_json"

    huge = await api.client.post(
        "/api/v1/images/generate",
        content=b'{"scene_notes": "' + b"a" * 300_000 + b'"}',
        headers={**api.ana, "content-type": "application/json"},
    )
    assert huge.status_code == 413
    assert huge.json()["code"] == "body_too_large"
    assert await api.runtime.jobs.counts() == {}


async def test_auth_missing_bad_and_revoked_keys(api: Api) -> None:
    missing = await api.client.get("/api/v1/catalog")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["code"] == "unauthorized"

    forged = await api.client.get(
        "/api/v1/catalog", headers={"Authorization": "Bearer cav_" + "x" * 43}
    )
    assert forged.status_code == 401
    assert forged.json()["code"] == "invalid_key"
    entries, _ = await api.runtime.audit.query(action=AuditAction.AUTH_FAILED)
    assert entries
    assert entries[0].details["path"] == "/api/v1/catalog"

    new = await api.runtime.accounts.create_key("ana", actor="test")
    headers = {"Authorization": f"Bearer {new.token}"}
    assert (await api.client.get("/api/v1/catalog", headers=headers)).status_code == 200
    await api.runtime.accounts.revoke_key(new.key.id, actor="test")
    assert (await api.client.get("/api/v1/catalog", headers=headers)).status_code == 401


async def test_users_see_only_their_own_images(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    await api.drain(1)
    base = f"/api/v1/images/{image_id}"
    for method, path in (
        ("GET", base),
        ("GET", f"{base}/status"),
        ("GET", f"{base}/events"),
        ("GET", f"{base}/download"),
        ("GET", f"{base}/shares"),
        ("POST", f"{base}/cancel"),
        ("POST", f"{base}/regenerate"),
        ("POST", f"{base}/share"),
        ("DELETE", base),
    ):
        answer = await api.client.request(method, path, headers=api.bob)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["code"] == "not_found"
    unknown = await api.client.get(f"/api/v1/images/{uuid.uuid4()}", headers=api.ana)
    assert unknown.status_code == 404
    assert (await api.client.get(base, headers=api.admin)).status_code == 200
    assert (await api.client.get(base, headers=api.ana)).status_code == 200
    listing = await api.client.get("/api/v1/images/user/ana", headers=api.bob)
    assert listing.status_code == 404
    assert (await api.client.get("/api/v1/images/user/ana", headers=api.admin)).json()["items"]


@BOTH_DATABASES
async def test_idempotency_key_replays_and_refuses_a_different_body(api: Api) -> None:
    headers = {**api.ana, "Idempotency-Key": "order-17"}
    body = {"frame": "onboarding/lighting-the-torch"}  # no seed: each plain submit draws one
    first = await api.client.post("/api/v1/images/generate", json=body, headers=headers)
    replay = await api.client.post("/api/v1/images/generate", json=body, headers=headers)
    assert first.status_code == replay.status_code == 202
    assert first.json()["image_id"] == replay.json()["image_id"]
    assert replay.headers["idempotent-replayed"] == "true"
    other = await api.client.post(
        "/api/v1/images/generate", json={**body, "seed": 5}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    plain = await api.client.post("/api/v1/images/generate", json=body, headers=api.ana)
    assert plain.json()["image_id"] != first.json()["image_id"]
    # the same key belongs to each user separately
    bobs = await api.client.post(
        "/api/v1/images/generate", json=body, headers={**api.bob, "Idempotency-Key": "order-17"}
    )
    assert bobs.status_code == 202
    assert bobs.json()["image_id"] != first.json()["image_id"]
    assert (await api.runtime.jobs.counts())["queued"] == 3


async def test_cancel_then_cancel_again_conflicts(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    cancelled = await api.client.post(f"/api/v1/images/{image_id}/cancel", headers=api.ana)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await api.client.post(f"/api/v1/images/{image_id}/cancel", headers=api.ana)
    assert again.status_code == 409
    assert again.json()["code"] == "not_cancellable"


@BOTH_DATABASES
async def test_delete_removes_objects_and_hides_the_image(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    await api.drain(1)
    job = await api.runtime.jobs.get(uuid.UUID(image_id))
    assert job is not None
    assert job.storage_key
    assert job.thumbnail_key
    deleted = await api.client.delete(f"/api/v1/images/{image_id}", headers=api.ana)
    assert deleted.status_code == 204
    assert await api.runtime.store.head(job.storage_key) is None
    assert await api.runtime.store.head(job.thumbnail_key) is None
    assert (await api.client.get(f"/api/v1/images/{image_id}", headers=api.ana)).status_code == 200
    assert (
        await api.client.delete(f"/api/v1/images/{image_id}", headers=api.ana)
    ).status_code == 404
    entries, _ = await api.runtime.audit.query(action=AuditAction.IMAGE_DELETED)
    assert [entry.target for entry in entries] == [image_id]
    listed = (await api.client.get("/api/v1/images/user/ana", headers=api.ana)).json()
    assert listed["items"] == []


async def test_regenerate_with_the_same_or_a_new_seed(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    same = await api.client.post(
        f"/api/v1/images/{image_id}/regenerate", json={"seed": "same"}, headers=api.ana
    )
    assert same.status_code == 202
    fresh = await api.client.post(f"/api/v1/images/{image_id}/regenerate", headers=api.ana)
    ids = {image_id, same.json()["image_id"], fresh.json()["image_id"]}
    assert len(ids) == 3
    seeds = {}
    for other in ids:
        seeds[other] = (await api.client.get(f"/api/v1/images/{other}", headers=api.ana)).json()
    assert seeds[same.json()["image_id"]]["seed"] == 77
    assert seeds[same.json()["image_id"]]["params"] == seeds[image_id]["params"]
    bad = await api.client.post(
        f"/api/v1/images/{image_id}/regenerate", json={"seed": "other"}, headers=api.ana
    )
    assert bad.status_code == 422


async def test_events_stream_status_changes_until_the_end(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    stop = asyncio.Event()
    worker = asyncio.create_task(api.runtime.worker().run(stop))
    try:
        answer = await asyncio.wait_for(
            api.client.get(f"/api/v1/images/{image_id}/events", headers=api.ana), 30
        )
    finally:
        stop.set()
        await worker
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = [block for block in answer.text.split("\n\n") if block.strip()]
    assert events[0].startswith("retry: ")
    statuses = []
    for block in events[1:]:
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "status":
            statuses.append(json.loads(lines["data"])["status"])
    assert statuses[0] in ("queued", "processing")
    assert statuses[-1] == "completed"
    assert events[-1].startswith("event: end")


@BOTH_DATABASES
async def test_listing_filters_and_pages(api: Api) -> None:
    frames = ["onboarding/lighting-the-torch", "onboarding/the-invitation"]
    for seed in range(3):
        for frame in frames:
            await api.generate(api.ana, frame=frame, seed=seed)
    await api.generate(api.bob, frame=frames[0], seed=1)
    first = await api.client.get("/api/v1/images/user/ana?limit=4", headers=api.ana)
    assert first.status_code == 200
    page = first.json()
    assert len(page["items"]) == 4
    assert page["next_cursor"]
    assert page["next_url"].startswith("/api/v1/images/user/ana?")
    rest = (await api.client.get(page["next_url"], headers=api.ana)).json()
    assert len(rest["items"]) == 2
    assert rest["next_cursor"] is None
    seen = [item["image_id"] for item in page["items"] + rest["items"]]
    assert len(set(seen)) == 6
    only = await api.client.get(
        "/api/v1/images/user/ana", params={"frame": frames[1], "sort": "oldest"}, headers=api.ana
    )
    assert [item["frame_id"] for item in only.json()["items"]] == [frames[1]] * 3
    bad = await api.client.get(
        "/api/v1/images/user/ana", params={"status": "done", "limit": "500"}, headers=api.ana
    )
    assert bad.status_code == 422
    assert {error["field"] for error in bad.json()["errors"]} == {"status", "limit"}
