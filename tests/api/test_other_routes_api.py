"""Sequences, catalogue, prompt previews, sharing, downloads, health and metrics."""

from __future__ import annotations

import uuid
from datetime import timedelta

from caverna.services.sharing import SHARE_PURPOSE
from tests.api.conftest import Api

FRAME = {"frame": "onboarding/lighting-the-torch", "seed": 77}


async def test_a_sequence_is_queued_whole_and_followed(api: Api) -> None:
    answer = await api.client.post(
        "/api/v1/sequences/generate", json={"sequence": "onboarding", "seed": 9}, headers=api.ana
    )
    assert answer.status_code == 202
    body = answer.json()
    assert len(body["image_ids"]) == 8
    assert body["frames"][0]["frame_id"] == "onboarding/the-invitation"
    assert body["status"] == "queued"
    path = answer.headers["location"]
    assert path == f"/api/v1/sequences/{body['sequence_id']}"
    await api.drain(8)
    done = (await api.client.get(path, headers=api.ana)).json()
    assert done["status"] == "completed"
    assert done["progress"] == 1.0
    assert all(frame["url"] for frame in done["frames"])
    assert (await api.client.get(path, headers=api.bob)).status_code == 404
    missing = await api.client.get(f"/api/v1/sequences/{uuid.uuid4()}", headers=api.ana)
    assert missing.status_code == 404


async def test_a_bad_sequence_request_queues_nothing(api: Api) -> None:
    answer = await api.client.post(
        "/api/v1/sequences/generate",
        json={"sequence": "onbording", "outfit": "nope"},
        headers=api.ana,
    )
    assert answer.status_code == 422
    errors = {error["field"]: error for error in answer.json()["errors"]}
    assert errors["sequence"]["suggestion"] == "onboarding"
    shared_pose = await api.client.post(
        "/api/v1/sequences/generate", json={"sequence": "onboarding", "pose": "x"}, headers=api.ana
    )
    assert shared_pose.status_code == 422
    assert shared_pose.json()["errors"][0]["field"] == "pose"
    assert await api.runtime.jobs.counts() == {}


async def test_catalog_and_prompt_preview(api: Api) -> None:
    catalog = (await api.client.get("/api/v1/catalog", headers=api.ana)).json()
    assert catalog["default_pack"] == "capitao-caverna"
    pack = catalog["packs"][0]
    assert pack["catalog"]["poses"]
    assert pack["sequences"][0]["id"] == "onboarding"
    unknown = await api.client.get("/api/v1/catalog?pack=nope", headers=api.ana)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_pack"

    preview = await api.client.post(
        "/api/v1/prompts/preview",
        json={**FRAME, "providers": ["openai", "midjourney"]},
        headers=api.ana,
    )
    result = preview.json()
    assert result["valid"] is True
    assert [c["provider"] for c in result["compiled"]] == ["openai", "midjourney"]
    assert "--seed 77" in result["compiled"][1]["prompt"]
    invalid = (
        await api.client.post("/api/v1/prompts/preview", json={"pose": "x"}, headers=api.ana)
    ).json()
    assert invalid["valid"] is False
    assert invalid["errors"][0]["code"] == "unknown_option"
    assert await api.runtime.jobs.counts() == {}


async def test_share_links_work_without_a_key_until_revoked(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    not_yet = await api.client.post(f"/api/v1/images/{image_id}/share", headers=api.ana)
    assert not_yet.status_code == 409
    await api.drain(1)
    created = await api.client.post(
        f"/api/v1/images/{image_id}/share", json={"expires_in_seconds": 3600}, headers=api.ana
    )
    assert created.status_code == 201
    link = created.json()
    url = link["url"]
    assert url.startswith("http://caverna.test/s/")
    shared = await api.client.get(url)
    assert shared.status_code == 200
    assert shared.headers["content-type"] == "image/webp"
    token = url.rsplit("/", 1)[1]
    share_id, expires, signature = token.split(".")
    tampered = f"{share_id}.{int(expires) + 3600}.{signature}"
    forged = await api.client.get(f"/s/{tampered}")
    assert forged.status_code == 403
    assert forged.json()["code"] == "invalid_link"
    past = api.runtime.clock() - timedelta(minutes=1)
    stale = api.runtime.signer.sign(SHARE_PURPOSE, share_id, past)
    expired = await api.client.get(f"/s/{share_id}.{stale.expires}.{stale.signature}")
    assert expired.status_code == 403
    assert "expired" in expired.json()["detail"]

    listed = (await api.client.get(f"/api/v1/images/{image_id}/shares", headers=api.ana)).json()
    assert [item["share_id"] for item in listed] == [link["share_id"]]
    assert listed[0]["url"] is None
    revoked = await api.client.delete(
        f"/api/v1/images/{image_id}/shares/{link['share_id']}", headers=api.ana
    )
    assert revoked.status_code == 204
    assert (await api.client.get(url)).status_code == 403
    too_long = await api.client.post(
        f"/api/v1/images/{image_id}/share",
        json={"expires_in_seconds": 10**9},
        headers=api.ana,
    )
    assert too_long.status_code == 422


async def test_download_has_a_meaningful_filename(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    await api.drain(1)
    answer = await api.client.get(f"/api/v1/images/{image_id}/download", headers=api.ana)
    assert answer.status_code == 200
    disposition = answer.headers["content-disposition"]
    expected = f"capitao-caverna-onboarding-lighting-the-torch-{image_id.replace('-', '')[:8]}"
    assert disposition.startswith(f'attachment; filename="{expected}.webp"')


async def test_media_links_refuse_forgeries_and_traversal(api: Api) -> None:
    image_id = await api.generate(api.ana, **FRAME)
    await api.drain(1)
    status = (await api.client.get(f"/api/v1/images/{image_id}/status", headers=api.ana)).json()
    url: str = status["url"]
    other = url.replace(image_id, str(uuid.uuid4()))
    assert (await api.client.get(other)).status_code == 403
    unsigned = url.split("?")[0]
    assert (await api.client.get(unsigned)).status_code == 422
    traversal = await api.client.get("/media/..%2F..%2Fsecret.key?expires=9999999999&sig=x")
    assert traversal.status_code in (403, 404)
    assert b"secret" not in traversal.content or traversal.json()["code"] != "ok"


async def test_health_readiness_metrics_and_providers(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "storage": "ok"}
    await api.client.get("/api/v1/catalog", headers=api.ana)
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'caverna_http_requests_total{method="GET",route="/api/v1/catalog",status="200"}' in text
    assert 'caverna_jobs{status="queued"}' in text
    providers = await api.client.get("/api/v1/providers/health", headers=api.ana)
    assert providers.json() == [
        {"provider": "preview", "healthy": None, "breaker": "none", "detail": ""}
    ]


async def test_openapi_documents_every_route(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = set(schema["paths"])
    for path in (
        "/api/v1/images/generate",
        "/api/v1/images/{image_id}/status",
        "/api/v1/images/{image_id}/events",
        "/api/v1/images/user/{user_id}",
        "/api/v1/sequences/generate",
        "/api/v1/catalog",
        "/api/v1/prompts/preview",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/providers/health",
    ):
        assert path in paths
    assert "Problem" in schema["components"]["schemas"]
