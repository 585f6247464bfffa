"""Brand consistency in the studio: the report on the image page (pending, then measured), the
review reasons, the storyboard's continuity panel and scored contact sheet, and the admins'
template analytics."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from caverna.api.app import ApiOptions, create_app
from caverna.bootstrap import build_container, open_runtime
from caverna.config import Settings
from caverna.domain.accounts import Role
from caverna.domain.jobs import ImageJob
from caverna.providers.preview import PreviewProvider
from caverna.services.consistency_reports import REVIEW_REASONS, stored_report
from caverna.web.app import install_web
from caverna.web.consistency_view import chart_size
from caverna.web.i18n import LOCALES, REVIEW_REASON_LABELS, reason_choices
from caverna.worker.loop import Worker, WorkerOptions
from tests.web.conftest import PASSWORD, Studio, csrf_of

FRAME = "onboarding/lighting-the-torch"
TEST_PACKS = Path(__file__).parents[1] / "data" / "packs"


async def complete(studio: Studio, jobs: int) -> None:
    """Run `jobs` jobs to completion without the derivatives pass: their reports are pending."""
    runtime = studio.runtime
    worker = Worker(
        jobs=runtime.jobs,
        processor=runtime.processor,
        providers=list(runtime.providers),
        options=WorkerOptions(derivatives=False),
    )
    await asyncio.wait_for(worker.run(asyncio.Event(), max_jobs=jobs), 60)


async def measure(studio: Studio) -> None:
    """The derivatives pass over every completed image it has not done yet."""
    await studio.runtime.processor.derivatives.catch_up()


async def image(studio: Studio, user: str = "ana", **params: object) -> ImageJob:
    result = await studio.runtime.generation.submit(user, {"frame": FRAME, **params})
    return result.job


async def reload(studio: Studio, job_id: uuid.UUID) -> ImageJob:
    found = await studio.runtime.jobs.get(job_id)
    assert found is not None
    return found


async def add_user(studio: Studio, user: str) -> None:
    await studio.runtime.accounts.create_key(user, role=Role.USER, actor="test")
    await studio.runtime.accounts.set_password(user, PASSWORD, actor="test")


async def switch(studio: Studio, user: str) -> None:
    """Sign out (the cookies go) and sign in as someone else."""
    studio.client.cookies.clear()
    answer = await studio.login(user)
    assert answer.status_code == 303, answer.text[:300]


def panel(html: str, element_id: str) -> str:
    found = re.search(rf'<section[^>]*id="{element_id}".*?</section>\s*(?=<|$)', html, re.S)
    assert found is not None, html[-2000:]
    return found.group(0)


# -- the image page -----------------------------------------------------------------------------


async def test_the_image_page_shows_pending_then_the_measured_report(studio: Studio) -> None:
    await studio.login()
    await studio.client.get("/lang/en?next=/generate")
    job = await image(studio, seed=3)
    await complete(studio, 1)
    assert (await reload(studio, job.id)).consistency is None

    pending = await studio.client.get(f"/images/{job.id}")
    assert pending.status_code == 200
    assert 'data-pending="true"' in pending.text
    assert 'id="consistency-pending"' in pending.text
    assert "Report pending" in pending.text
    assert 'id="consistency-overall"' not in pending.text
    fragment = await studio.client.get(f"/web/images/{job.id}/consistency")
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<section class="card cs-panel" id="consistency"')
    assert 'data-pending="true"' in fragment.text
    assert fragment.headers["cache-control"] == "no-store"

    await measure(studio)
    measured = await reload(studio, job.id)
    report = stored_report(measured)
    assert report is not None
    assert report.overall_score is not None

    shown = (await studio.client.get(f"/images/{job.id}")).text
    assert 'data-pending="false"' in shown
    assert "Report pending" not in shown
    overall = re.search(r'id="consistency-overall".*?</p>', shown, re.S)
    assert overall is not None
    assert f"{report.overall_score:.2f}" in overall.group(0)
    assert f'data-status="{report.status}"' in overall.group(0)
    for name in ("palette", "lighting", "format", "duplicates"):
        assert f'id="check-{name}"' in shown
    # palette: every dominant colour as a swatch, with the pack palette and the ΔE00
    palette = report.check("palette")
    assert palette is not None
    for colour in palette.measured["dominant"]:
        assert f"background: {colour['hex']}" in shown
    for swatch in palette.expected["palette"]:
        assert f"background: {swatch['hex']}" in shown
    assert f"{palette.measured['mean_delta_e']:.1f}" in shown
    assert "CIEDE2000" in shown
    # lighting: the frame's expected side against the measured one, and the brightness
    lighting = report.check("lighting")
    assert lighting is not None
    side = re.search(r"Key light side</dt>\s*<dd>(.*?)</dd>", shown, re.S)
    assert side is not None
    assert f"Expected: {lighting.expected['side']}" in side.group(1)
    assert f"Measured: {lighting.measured['side']}" in side.group(1)
    assert f"{lighting.measured['brightness']:.2f}" in shown
    assert "none (the pack has no variants)" in shown
    # the user's only image: nothing to compare with, said in words
    assert "No other image to compare with yet." in panel(shown, "check-duplicates")
    # the fragment the script swaps in is the same panel, now measured
    again = await studio.client.get(f"/web/images/{job.id}/consistency")
    assert 'data-pending="false"' in again.text
    assert 'id="consistency-overall"' in again.text


async def test_the_report_panel_is_the_owners_and_waits_for_completion(studio: Studio) -> None:
    await add_user(studio, "bea")
    job = await image(studio, seed=5)
    await studio.login()
    waiting = await studio.client.get(f"/images/{job.id}")
    assert 'id="consistency-not-completed"' in waiting.text
    assert 'data-pending="false"' in waiting.text  # nothing to poll for until it is done

    await switch(studio, "bea")
    assert (await studio.client.get(f"/web/images/{job.id}/consistency")).status_code == 404
    missing = await studio.client.get(f"/web/images/{uuid.uuid4()}/consistency")
    assert missing.status_code == 404
    studio.client.cookies.clear()
    signed_out = await studio.client.get(f"/web/images/{job.id}/consistency")
    assert signed_out.status_code == 401


async def test_near_duplicates_link_to_the_similar_image(studio: Studio) -> None:
    await studio.login()
    first = await image(studio, seed=1)
    await complete(studio, 1)
    await measure(studio)
    second = await image(studio, seed=2)  # the preview draws the same frame alike
    await complete(studio, 1)
    await measure(studio)
    report = stored_report(await reload(studio, second.id))
    assert report is not None
    duplicates = report.check("duplicates")
    assert duplicates is not None
    assert [d["id"] for d in duplicates.measured["near_duplicates"]] == [str(first.id)]

    shown = (await studio.client.get(f"/images/{second.id}")).text
    block = panel(shown, "check-duplicates")
    assert f'href="/images/{first.id}"' in block
    distance = duplicates.measured["near_duplicates"][0]["distance"]
    assert f"{distance} de 64 bits diferem" in block  # Portuguese by default


async def test_the_reroll_chain_marks_the_best_attempt(studio: Studio) -> None:
    await studio.login()
    await studio.client.get("/lang/en?next=/generate")
    original = await image(studio, seed=21)
    attempt = await image(studio, seed=22)
    assert await studio.runtime.jobs.set_reroll(attempt.id, original.id, 1)
    await complete(studio, 2)
    await measure(studio)
    scores = {
        job_id: (await reload(studio, job_id)).consistency_score
        for job_id in (original.id, attempt.id)
    }
    best = max(scores, key=lambda key: scores[key] or 0.0)

    shown = (await studio.client.get(f"/images/{attempt.id}")).text
    chain = re.search(r'<ol class="cs-chain".*?</ol>', shown, re.S)
    assert chain is not None
    items = re.findall(r"<li.*?</li>", chain.group(0), re.S)
    assert len(items) == 2
    assert f'href="/images/{original.id}">Original</a>' in items[0]
    assert "Attempt 1</strong> (this image)" in items[1]
    best_items = [item for item in items if 'class="cs-best"' in item]
    assert len(best_items) == 1
    assert (best == original.id) == (best_items[0] is items[0])
    for job_id, item in zip((original.id, attempt.id), items, strict=True):
        assert f"Score {scores[job_id]:.2f}" in item
    # the original's page shows the same chain
    assert "Attempt 1</a>" in (await studio.client.get(f"/images/{original.id}")).text


# -- reviews ------------------------------------------------------------------------------------


def test_every_review_reason_has_a_label_in_both_languages() -> None:
    missing = [
        (reason, locale)
        for reason in REVIEW_REASONS
        for locale in LOCALES
        if not REVIEW_REASON_LABELS.get(reason, {}).get(locale, "").strip()
    ]
    assert not missing, f"review reasons without a label: {missing}"
    assert set(REVIEW_REASON_LABELS) == set(REVIEW_REASONS), "labels for unknown reasons"
    for locale in LOCALES:
        labels = [label for _, label in reason_choices(locale)]
        assert len(set(labels)) == len(labels), f"two reasons read alike in {locale}"


async def test_the_review_form_offers_exactly_the_service_reasons(studio: Studio) -> None:
    await studio.login()
    job = await image(studio, seed=8)
    await complete(studio, 1)
    page = await studio.client.get(f"/images/{job.id}")
    assert 'id="review-state"' in page.text  # "no review yet"
    assert "Nenhuma avaliação ainda" in page.text
    select = re.search(r'<select id="reason".*?</select>', page.text, re.S)
    assert select is not None
    offered = re.findall(r'<option value="([^"]*)"', select.group(0))
    assert offered == ["", *REVIEW_REASONS]
    assert "Sem espaço para o texto" in select.group(0)

    url = f"/images/{job.id}/review"
    token = csrf_of(page.text)
    bogus = await studio.client.post(
        url, data={"csrf_token": token, "verdict": "rejected", "reason": "ugly"}
    )
    assert bogus.status_code == 422
    assert 'id="review-problems"' in bogus.text
    assert await studio.runtime.jobs.review(job.id) is None

    done = await studio.client.post(
        url,
        data={
            "csrf_token": token,
            "verdict": "rejected",
            "reason": "text_space",
            "note": "o título cobre o rosto",
        },
    )
    assert done.status_code == 303
    stored = await studio.runtime.jobs.review(job.id)
    assert stored is not None
    assert stored["review_reason"] == "text_space"
    assert stored["review_note"] == "o título cobre o rosto"
    shown = (await studio.client.get(f"/images/{job.id}")).text
    assert "Reprovada: Sem espaço para o texto" in shown


# -- the storyboard -----------------------------------------------------------------------------


def channel_swapped(data: bytes) -> bytes:
    """The same picture with red and blue swapped: the warm cave turns cold blue."""
    with Image.open(io.BytesIO(data)) as picture:
        red, green, blue = picture.convert("RGB").split()
        out = io.BytesIO()
        Image.merge("RGB", (blue, green, red)).save(out, format="WEBP", quality=90)
    return out.getvalue()


async def generate_all(studio: Studio) -> uuid.UUID:
    csrf = await studio.csrf("/storyboard")
    answer = await studio.client.post(
        "/storyboard/generate",
        data={"csrf_token": csrf, "sequence_key": "onboarding", "seed": "8"},
    )
    assert answer.status_code == 303, answer.text[:500]
    return uuid.UUID(answer.headers["location"].split("=", 1)[1])


def rows(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr class="[^"]*" data-frame="([^"]+)" data-breaks="(true|false)"', html)


async def test_the_storyboard_panel_shows_scores_drift_and_the_frame_that_breaks(
    studio: Studio,
) -> None:
    await studio.login()
    await studio.client.get("/lang/en?next=/storyboard")
    sequence_id = await generate_all(studio)
    await complete(studio, 8)
    page = f"/storyboard?sequence={sequence_id}"

    pending = (await studio.client.get(page)).text
    block = panel(pending, f"continuity-{sequence_id}")
    assert 'data-pending="true"' in block
    assert "Report pending: 0 of 8 frames measured" in block
    assert "report.png" not in block  # nothing measured: no sheet with scores yet

    await measure(studio)
    clean = (await studio.client.get(page)).text
    block = panel(clean, f"continuity-{sequence_id}")
    assert 'data-pending="false"' in block
    assert len(rows(block)) == 8
    assert all(breaks == "false" for _, breaks in rows(block))
    assert "No frame breaks continuity." in block
    assert f'href="/storyboard/{sequence_id}/report.png"' in block
    jobs = await studio.runtime.jobs.for_sequence(sequence_id)
    for job in jobs:
        assert job.consistency_score is not None
        assert f"{job.consistency_score:.2f}" in block
    assert "first frame" in block  # no drift before frame 1

    # frame 4 redrawn cold: it breaks, and only it is highlighted
    odd = sorted(jobs, key=lambda j: j.frame_index or 0)[3]
    assert odd.storage_key is not None
    store = studio.runtime.store
    swapped = channel_swapped(await store.get(odd.storage_key))
    await store.put(odd.storage_key, swapped, content_type="image/webp")
    assert await studio.runtime.processor.derivatives.make(odd)
    fragment = await studio.client.get(f"/web/sequences/{sequence_id}/continuity")
    assert fragment.status_code == 200
    assert [frame for frame, breaks in rows(fragment.text) if breaks == "true"] == [odd.frame_id]
    assert 'class="cs-break"' in fragment.text
    assert "Frames that break continuity: 4" in fragment.text
    assert "Breaks continuity" in fragment.text


async def test_the_scored_contact_sheet_is_only_for_the_runs_owner(studio: Studio) -> None:
    await add_user(studio, "bea")
    await studio.login()
    sequence_id = await generate_all(studio)
    await complete(studio, 8)
    await measure(studio)
    url = f"/storyboard/{sequence_id}/report.png"
    sheet = await studio.client.get(url)
    assert sheet.status_code == 200
    assert sheet.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(sheet.content)) as picture:
        assert picture.format == "PNG"
        assert picture.width > 800

    await switch(studio, "bea")
    for path in (url, f"/web/sequences/{sequence_id}/continuity"):
        refused = await studio.client.get(path, headers={"accept": "text/html"})
        assert refused.status_code == 404, path
        assert "image/png" not in refused.headers.get("content-type", "")
    for bad in (f"/storyboard/{uuid.uuid4()}/report.png", "/storyboard/not-an-id/report.png"):
        assert (await studio.client.get(bad)).status_code == 404

    studio.client.cookies.clear()
    bounce = await studio.client.get(url)
    assert bounce.status_code == 303
    assert bounce.headers["location"].startswith("/login?next=")


# -- analytics ----------------------------------------------------------------------------------


async def test_analytics_is_for_admins_with_rate_interval_and_chart(studio: Studio) -> None:
    await studio.login("ana")
    for path in ("/admin/analytics", "/admin/analytics.png"):
        assert (await studio.client.get(path)).status_code == 403, path

    await switch(studio, "admin")
    await studio.client.get("/lang/en?next=/admin")
    empty = await studio.client.get("/admin/analytics")
    assert empty.status_code == 200
    assert 'id="an-empty"' in empty.text
    assert 'href="/admin/analytics" aria-current="page"' in empty.text

    approved = await image(studio, seed=31)
    rejected = await image(studio, seed=32, pose="standing-ready")
    unreviewed = await image(studio, seed=33)
    await complete(studio, 3)
    await measure(studio)
    unreviewed_page = (await studio.client.get("/admin/analytics")).text
    assert 'id="an-no-reviews"' in unreviewed_page
    assert "No reviews yet" in unreviewed_page
    await studio.runtime.jobs.set_review(approved.id, "approved", None, None, "admin")
    await studio.runtime.jobs.set_review(rejected.id, "rejected", "off_model", None, "admin")
    assert unreviewed.id != approved.id

    page = await studio.client.get("/admin/analytics", params={"by": "provider"})
    assert page.status_code == 200
    assert 'id="an-no-reviews"' not in page.text
    body = re.search(r"<table>.*?</table>", page.text, re.S)
    assert body is not None
    cells = re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", body.group(0))
    # one group: preview, 3 images, 2 reviewed, 1 approved, 50% with Wilson 9.5%-90.5%
    assert cells[-7:-1] == ["preview", "3", "2", "1", "50.0%", "9.5% - 90.5%"]
    assert 'id="by-provider" name="by" value="provider" checked' in page.text
    assert 'id="by-pose" name="by" value="pose" >' in page.text
    chart = re.search(
        r'<img src="(/admin/analytics.png\?[^"]*)" width="(\d+)" height="(\d+)"', page.text
    )
    assert chart is not None
    png = await studio.client.get(chart.group(1))
    assert png.status_code == 200
    with Image.open(io.BytesIO(png.content)) as picture:
        assert picture.size == (int(chart.group(2)), int(chart.group(3))) == chart_size(1)
    assert 'id="an-no-variants"' in page.text  # the shipped pack has no prompt variants

    by_two = await studio.client.get("/admin/analytics?by=provider&by=pose")
    assert len(re.findall(r'<tr>\s*<th scope="row">preview</th>', by_two.text)) == 2

    wrong = await studio.client.get("/admin/analytics", params={"by": "colour"})
    assert wrong.status_code == 422
    assert "template_version, provider, pose, frame, variant" in wrong.text
    assert "<table>" not in wrong.text
    assert (await studio.client.get("/admin/analytics.png?by=colour")).status_code == 422


@pytest.fixture
async def ab_studio(tmp_path: Path) -> AsyncIterator[Studio]:
    """The studio with the test packs installed (one of them splits its style in two)."""
    settings = Settings(data_dir=tmp_path, image_processes=0, pack_path=str(TEST_PACKS))
    container = build_container(settings)
    runtime = await open_runtime(container, providers={"preview": PreviewProvider()})
    await runtime.accounts.create_key("admin", role=Role.ADMIN, actor="test")
    await runtime.accounts.set_password("admin", PASSWORD, actor="test")
    app = create_app(container, runtime=runtime, options=ApiOptions(run_workers=False))
    install_web(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://studio.test") as client:
        yield Studio(client, runtime)
    await runtime.aclose()


async def test_analytics_compares_the_prompt_variants(ab_studio: Studio) -> None:
    studio = ab_studio
    ids = [
        (
            await studio.runtime.generation.submit("admin", {"pack": "lumen-fox-ab", "seed": s})
        ).job.id
        for s in range(6)
    ]
    await complete(studio, len(ids))
    variants = {job_id: (await reload(studio, job_id)).variant for job_id in ids}
    assert set(variants.values()) == {"a", "b"}
    for job_id, variant in variants.items():
        verdict, reason = ("approved", None) if variant == "a" else ("rejected", "wrong_palette")
        await studio.runtime.jobs.set_review(job_id, verdict, reason, None, "admin")

    await studio.login("admin")
    await studio.client.get("/lang/en?next=/admin")
    page = (await studio.client.get("/admin/analytics")).text
    section = re.search(r'id="an-variants".*?</section>', page, re.S)
    assert section is not None
    shown = re.findall(r'<th scope="row">[^<]+</th>\s*<td>([ab])</td>', section.group(0))
    assert shown == ["a", "b"]
    count_a = sum(1 for v in variants.values() if v == "a")
    assert f'<td>a</td>\n      <td class="num">{count_a}</td>' in section.group(0)
    assert "100.0%" in section.group(0)
    assert "0.0%" in section.group(0)
