"""Admin bulk operations: validated up front, run in the background, progress from the row."""

from __future__ import annotations

import uuid

from caverna.domain.accounts import AuditAction
from tests.api.conftest import Api

TORCH = "onboarding/lighting-the-torch"
INVITATION = "onboarding/the-invitation"


async def _make(api: Api) -> None:
    for seed in range(3):
        await api.generate(api.ana, frame=TORCH, seed=seed)
    await api.generate(api.ana, frame=INVITATION, seed=1)
    await api.generate(api.bob, frame=TORCH, seed=1)
    await api.drain(5)


async def test_bulk_delete_by_filter_reports_progress(api: Api) -> None:
    await _make(api)
    started = await api.client.post(
        "/api/v1/admin/bulk",
        json={"action": "delete", "filters": {"frame": TORCH}},
        headers=api.admin,
    )
    assert started.status_code == 202
    body = started.json()
    assert body["status"] == "queued"
    location = started.headers["location"]
    assert await api.runtime.bulk.run_once()
    done = (await api.client.get(location, headers=api.admin)).json()
    assert done["status"] == "completed"
    assert (done["total"], done["done"], done["failed"], done["progress"]) == (4, 4, 0, 1.0)
    counts = await api.runtime.jobs.counts()
    assert counts == {"deleted": 4, "completed": 1}  # ana's and bob's torch frames; one left
    remaining = (await api.client.get("/api/v1/images/user/ana", headers=api.ana)).json()
    assert [item["frame_id"] for item in remaining["items"]] == [INVITATION]
    actions = {
        entry.action
        for entry in (await api.runtime.audit.query(target=str(body["operation_id"])))[0]
    }
    assert actions == {AuditAction.BULK_STARTED, AuditAction.BULK_FINISHED}
    listed = (await api.client.get("/api/v1/admin/bulk", headers=api.admin)).json()
    assert [item["operation_id"] for item in listed] == [body["operation_id"]]


async def test_bulk_regenerate_for_one_user_never_visits_its_own_new_images(api: Api) -> None:
    await _make(api)
    started = await api.client.post(
        "/api/v1/admin/bulk",
        json={"action": "regenerate", "filters": {"user": "ana", "status": "completed"}},
        headers=api.admin,
    )
    assert started.status_code == 202
    assert await api.runtime.bulk.run_once()
    status = (await api.client.get(started.headers["location"], headers=api.admin)).json()
    assert (status["total"], status["done"]) == (4, 4)
    counts = await api.runtime.jobs.counts()
    assert counts == {"completed": 5, "queued": 4}
    assert not await api.runtime.bulk.run_once()  # nothing left to take


async def test_bad_bulk_requests_change_nothing(api: Api) -> None:
    answer = await api.client.post(
        "/api/v1/admin/bulk",
        json={"action": "purge", "filters": {"pose": "moonwalk", "colour": "red"}},
        headers=api.admin,
    )
    assert answer.status_code == 422
    fields = {error["field"]: error["code"] for error in answer.json()["errors"]}
    assert fields == {
        "action": "invalid_choice",
        "filters.pose": "unknown_option",
        "filters.colour": "unknown_field",
    }
    assert (await api.client.get("/api/v1/admin/bulk", headers=api.admin)).json() == []
    forbidden = await api.client.post(
        "/api/v1/admin/bulk", json={"action": "delete"}, headers=api.ana
    )
    assert forbidden.status_code == 403
    missing = await api.client.get(f"/api/v1/admin/bulk/{uuid.uuid4()}", headers=api.admin)
    assert missing.status_code == 404
