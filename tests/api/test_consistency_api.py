"""Brand consistency over the API: the report on each image, reviews with their fixed reasons,
a storyboard's continuity report and contact sheet, template analytics with two prompt variants,
and the re-rolls of a low-scoring image."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from caverna.domain.jobs import ImageJob
from caverna.services.consistency_reports import REVIEW_REASONS
from tests.api.conftest import Api

TEST_PACKS = Path(__file__).parents[1] / "data" / "packs"


async def settle(api: Api, jobs: int) -> None:
    """Run the jobs, then the derivatives pass over whatever it has not done yet."""
    await api.drain(jobs)
    await api.runtime.processor.derivatives.catch_up()


async def job(api: Api, image_id: str) -> ImageJob:
    found = await api.runtime.jobs.get(uuid.UUID(image_id))
    assert found is not None
    return found


def channel_swapped(data: bytes) -> bytes:
    """The same picture with red and blue swapped: the warm cave turns cold blue."""
    with Image.open(io.BytesIO(data)) as image:
        red, green, blue = image.convert("RGB").split()
        out = io.BytesIO()
        Image.merge("RGB", (blue, green, red)).save(out, format="WEBP", quality=90)
    return out.getvalue()


async def test_an_image_carries_its_consistency_report_and_variant(api: Api) -> None:
    image_id = await api.generate(api.ana, frame="onboarding/lighting-the-torch", seed=3)
    await settle(api, 1)

    body = (await api.client.get(f"/api/v1/images/{image_id}", headers=api.ana)).json()
    consistency = body["consistency"]
    assert consistency is not None
    assert 0.0 <= consistency["score"] <= 1.0
    assert consistency["report"]["overall_score"] == consistency["score"]
    assert consistency["status"] == consistency["report"]["status"]
    names = {check["name"] for check in consistency["report"]["checks"]}
    assert names == {"format", "palette", "lighting", "duplicates"}
    assert body["variant"] is None  # the shipped pack declares no variants
    assert body["reroll_of"] is None
    listed = (await api.client.get("/api/v1/images/user/ana", headers=api.ana)).json()["items"]
    assert listed[0]["consistency"]["score"] == consistency["score"]


async def test_review_reasons_are_validated_and_nothing_is_stored_on_error(api: Api) -> None:
    image_id = await api.generate(api.ana, pose="standing-ready", seed=1)
    await settle(api, 1)
    url = f"/api/v1/images/{image_id}/review"

    bogus = await api.client.put(
        url, json={"verdict": "rejected", "reason": "ugly"}, headers=api.ana
    )
    assert bogus.status_code == 422
    assert bogus.headers["content-type"].startswith("application/problem+json")
    (error,) = bogus.json()["errors"]
    assert error["code"] == "invalid_choice"
    assert error["field"] == "reason"
    assert sorted(error["allowed"]) == sorted(REVIEW_REASONS)

    missing = await api.client.put(url, json={"verdict": "rejected"}, headers=api.ana)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["code"] == "reason_required"
    assert missing.json()["errors"][0]["allowed"] == list(REVIEW_REASONS)

    verdict = await api.client.put(url, json={"verdict": "maybe"}, headers=api.ana)
    assert verdict.status_code == 422
    assert verdict.json()["errors"][0]["allowed"] == ["approved", "rejected"]

    before = (await api.client.get(url, headers=api.ana)).json()
    assert before["review_status"] is None
    assert before["reasons"] == list(REVIEW_REASONS)

    done = await api.client.put(
        url,
        json={"verdict": "rejected", "reason": "text_space", "note": "the title covers the face"},
        headers=api.ana,
    )
    assert done.status_code == 200, done.text
    stored = (await api.client.get(url, headers=api.ana)).json()
    assert stored["review_status"] == "rejected"
    assert stored["review_reason"] == "text_space"
    assert stored["review_note"] == "the title covers the face"
    assert stored["reviewed_by"] == "ana"
    # the same row the web studio's review form writes
    assert (await api.runtime.jobs.review(uuid.UUID(image_id)) or {})["review_reason"] == (
        "text_space"
    )
    # approving drops the reason; someone else's image is not found
    approved = await api.client.put(url, json={"verdict": "approved"}, headers=api.ana)
    assert approved.json()["review_reason"] is None
    other = await api.client.put(url, json={"verdict": "approved"}, headers=api.bob)
    assert other.status_code == 404


async def test_sequence_report_flags_a_swapped_palette_frame(api: Api, tmp_path: Path) -> None:
    started = await api.client.post(
        "/api/v1/sequences/generate", json={"sequence": "onboarding", "seed": 8}, headers=api.ana
    )
    assert started.status_code == 202
    sequence_id = started.json()["sequence_id"]
    frames = started.json()["image_ids"]
    await settle(api, len(frames))
    url = f"/api/v1/sequences/{sequence_id}/report"

    clean = (await api.client.get(url, headers=api.ana)).json()
    assert clean["analysed"] == len(frames)
    assert [f["image_id"] for f in clean["frames"]] == frames
    assert clean["continuity"]["breaks"] == []
    assert all(f["score"] is not None for f in clean["frames"])

    # frame 4 redrawn cold: its stored bytes replaced, and the pass run again over it
    odd = await job(api, frames[3])
    assert odd.storage_key is not None
    store = api.runtime.store
    await store.put(
        odd.storage_key,
        channel_swapped(await store.get(odd.storage_key)),
        content_type="image/webp",
    )
    assert await api.runtime.processor.derivatives.make(odd)

    flagged = (await api.client.get(url, headers=api.ana)).json()
    assert flagged["continuity"]["breaks"] == [odd.frame_id]
    assert [f["frame_id"] for f in flagged["frames"] if f["breaks"]] == [odd.frame_id]
    assert flagged["continuity"]["reasons"][odd.frame_id]

    sheet = await api.client.get(f"{url}.png", headers=api.ana)
    assert sheet.status_code == 200
    assert sheet.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(sheet.content)) as image:
        assert image.format == "PNG"
        assert image.width > 800

    assert (await api.client.get(url, headers=api.bob)).status_code == 404
    missing = await api.client.get(f"/api/v1/sequences/{uuid.uuid4()}/report", headers=api.ana)
    assert missing.status_code == 404


@pytest.mark.parametrize("api", [{"pack_path": str(TEST_PACKS)}], indirect=True)
async def test_template_report_compares_two_variants(api: Api) -> None:
    ids = [await api.generate(api.ana, pack="lumen-fox-ab", seed=seed) for seed in range(10)]
    await settle(api, len(ids))
    variants = {image_id: (await job(api, image_id)).variant for image_id in ids}
    assert set(variants.values()) == {"a", "b"}
    # every "a" approved, every "b" rejected as off palette
    for image_id, variant in variants.items():
        body: dict[str, Any] = (
            {"verdict": "approved"}
            if variant == "a"
            else {"verdict": "rejected", "reason": "wrong_palette"}
        )
        answer = await api.client.put(
            f"/api/v1/images/{image_id}/review", json=body, headers=api.admin
        )
        assert answer.status_code == 200, answer.text

    report = await api.client.get(
        "/api/v1/admin/reports/templates", params={"by": "variant"}, headers=api.admin
    )
    assert report.status_code == 200, report.text
    groups = {g["variant"]: g for g in report.json()["groups"]}
    count_a = sum(1 for v in variants.values() if v == "a")
    assert groups["a"]["count"] == groups["a"]["reviewed"] == groups["a"]["approved"] == count_a
    assert groups["a"]["approval_rate"] == 1.0
    assert groups["b"]["approved"] == 0
    assert groups["b"]["approval_rate"] == 0.0
    low, high = groups["a"]["interval"]
    assert 0.0 < low < 1.0
    assert high == 1.0
    assert groups["a"]["mean_score"] is not None

    full = (await api.client.get("/api/v1/admin/reports/templates", headers=api.admin)).json()
    assert full["by"] == ["template_version", "provider", "pose", "frame", "variant"]
    assert sum(g["count"] for g in full["groups"]) == len(ids)

    for url, params in (
        ("/api/v1/admin/reports/templates", {"format": "png"}),
        ("/api/v1/admin/reports/templates.png", {}),
    ):
        chart = await api.client.get(url, params=params, headers=api.admin)
        assert chart.status_code == 200
        assert chart.headers["content-type"] == "image/png"
        assert chart.content.startswith(b"\x89PNG")

    bad = await api.client.get(
        "/api/v1/admin/reports/templates", params={"by": "colour"}, headers=api.admin
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["allowed"] == [
        "template_version",
        "provider",
        "pose",
        "frame",
        "variant",
    ]
    forbidden = await api.client.get("/api/v1/admin/reports/templates", headers=api.ana)
    assert forbidden.status_code == 403


@pytest.mark.parametrize("api", [{"reroll_below": 0.999, "reroll_max_attempts": 2}], indirect=True)
async def test_rerolls_are_listed_from_the_original_and_from_each_attempt(api: Api) -> None:
    original = await api.generate(api.ana, pose="standing-ready", seed=11)
    await settle(api, 1)
    await settle(api, 1)  # the first re-roll
    await settle(api, 1)  # the second, the last one allowed

    listed = (await api.client.get(f"/api/v1/images/{original}/rerolls", headers=api.ana)).json()
    assert listed["original_id"] == original
    assert [a["attempt"] for a in listed["attempts"]] == [1, 2]
    assert all(a["status"] == "completed" and a["score"] is not None for a in listed["attempts"])
    assert listed["policy"] == {
        "enabled": True,
        "below": 0.999,
        "max_attempts": 2,
        "budget_usd": 0.5,
    }
    second = listed["attempts"][1]["image_id"]
    detail = (await api.client.get(f"/api/v1/images/{second}", headers=api.ana)).json()
    assert detail["reroll_of"] == original
    assert detail["reroll_attempt"] == 2
    from_attempt = await api.client.get(f"/api/v1/images/{second}/rerolls", headers=api.ana)
    assert from_attempt.json()["attempts"] == listed["attempts"]
    assert (await api.runtime.jobs.counts()) == {"completed": 3}
