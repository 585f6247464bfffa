"""Studio pages through the app: sign-in, live validation, generate, image, gallery, CSRF."""

from __future__ import annotations

import asyncio
import html
import re
import uuid

from caverna.domain.jobs import JobStatus
from tests.web.conftest import Studio, csrf_of


async def test_pages_need_a_session_and_login_works(studio: Studio) -> None:
    bounce = await studio.client.get("/gallery?pose=training")
    assert bounce.status_code == 303
    assert bounce.headers["location"] == "/login?next=%2Fgallery%3Fpose%3Dtraining"
    wrong = await studio.login(password="not the password")
    assert wrong.status_code == 401
    assert "did not work" in wrong.text or "não conferem" in wrong.text
    ok = await studio.login()
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "caverna_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    page = await studio.client.get("/generate")
    assert page.status_code == 200
    assert '<select id="pose"' in page.text


async def test_login_with_an_api_key_and_logout(studio: Studio) -> None:
    key = await studio.runtime.accounts.create_key("bea", actor="test")
    page = await studio.client.get("/login")
    answer = await studio.client.post(
        "/login", data={"csrf_token": csrf_of(page.text), "api_key": key.token}
    )
    assert answer.status_code == 303
    csrf = await studio.csrf()
    out = await studio.client.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    assert (await studio.client.get("/generate")).status_code == 303


async def test_login_refuses_a_missing_csrf_token_and_open_redirects(studio: Studio) -> None:
    await studio.client.get("/login")
    forged = await studio.client.post(
        "/login", data={"csrf_token": "nope", "user": "ana", "password": "correct horse battery"}
    )
    assert forged.status_code == 401
    page = await studio.client.get("/login?next=//evil.example/")
    answer = await studio.client.post(
        "/login",
        data={
            "csrf_token": csrf_of(page.text),
            "user": "ana",
            "password": "correct horse battery",
            "next": "//evil.example/",
        },
    )
    assert answer.headers["location"] == "/generate"


async def test_live_check_disables_incompatible_options_with_a_reason(studio: Studio) -> None:
    await studio.login()
    csrf = await studio.csrf()
    answer = await studio.client.post(
        "/web/check",
        json={"pose": "arms-crossed", "dialect": "midjourney"},
        headers={"x-csrf-token": csrf},
    )
    assert answer.status_code == 200
    result = answer.json()
    assert result["problems"] == []
    assert "--ar" in result["compiled"]["prompt"]
    # a pose with both hands busy leaves no hand for a prop: props are ruled out with a reason
    assert any(result["disabled"]["prop"].values())
    bad = await studio.client.post(
        "/web/check", json={"pose": "moonwalk"}, headers={"x-csrf-token": csrf}
    )
    assert bad.json()["problems"][0]["code"] == "unknown_option"
    assert bad.json()["compiled"] is None
    refused = await studio.client.post("/web/check", json={}, headers={"x-csrf-token": "x"})
    assert refused.status_code == 403


async def test_generate_follow_and_act_on_an_image(studio: Studio) -> None:
    await studio.login()
    csrf = await studio.csrf()
    answer = await studio.client.post(
        "/generate",
        data={"csrf_token": csrf, "frame": "onboarding/lighting-the-torch", "seed": "5"},
    )
    assert answer.status_code == 303
    location = answer.headers["location"]
    image_id = uuid.UUID(location.rsplit("/", 1)[1])
    pending = await studio.client.get(location)
    assert "<progress" in pending.text
    stop = asyncio.Event()
    await asyncio.wait_for(studio.runtime.worker().run(stop, max_jobs=1), 30)
    status = (await studio.client.get(f"/web/images/{image_id}/status")).json()
    assert status["status"] == "completed"
    done = await studio.client.get(location)
    assert f'src="{status["url"]}"' in done.text.replace("&amp;", "&")
    download = await studio.client.get(f"{location}/download")
    assert download.headers["content-type"] == "image/webp"
    assert "attachment" in download.headers["content-disposition"]

    shared = await studio.client.post(f"{location}/share", data={"csrf_token": csrf})
    assert shared.status_code == 303
    detail = await studio.client.get(shared.headers["location"])
    assert 'id="share-url" value="http://studio.test/s/' in detail.text

    review = await studio.client.post(
        f"{location}/review",
        data={"csrf_token": csrf, "verdict": "rejected", "reason": "wrong_palette", "note": "hm"},
    )
    assert review.status_code == 303
    stored = await studio.runtime.jobs.review(image_id)
    assert stored is not None
    assert (stored["review_status"], stored["review_reason"]) == ("rejected", "wrong_palette")

    again = await studio.client.post(
        f"{location}/regenerate", data={"csrf_token": csrf, "seed": "same"}
    )
    assert again.status_code == 303
    assert again.headers["location"] != location

    no_token = await studio.client.post(f"{location}/delete", data={})
    assert no_token.status_code == 403
    deleted = await studio.client.post(f"{location}/delete", data={"csrf_token": csrf})
    assert deleted.headers["location"] == "/gallery"
    job = await studio.runtime.jobs.get(image_id)
    assert job is not None
    assert job.status is JobStatus.DELETED


async def test_an_invalid_form_is_shown_again_with_the_problems(studio: Studio) -> None:
    await studio.login()
    csrf = await studio.csrf()
    answer = await studio.client.post(
        "/generate", data={"csrf_token": csrf, "pose": "moonwalk", "seed": "-3"}
    )
    assert answer.status_code == 422
    assert "moonwalk" in answer.text
    assert await studio.runtime.jobs.counts() == {}


async def test_gallery_filters_empty_states_and_language(studio: Studio) -> None:
    await studio.login()
    empty = await studio.client.get("/gallery")
    assert 'class="empty"' in empty.text
    for seed in (1, 2):
        await studio.runtime.generation.submit(
            "ana", {"frame": "onboarding/lighting-the-torch", "seed": seed}
        )
    await studio.runtime.generation.submit("ana", {"frame": "onboarding/training", "seed": 1})
    listed = await studio.client.get("/gallery")
    assert listed.text.count('class="tile"') == 3
    only = await studio.client.get("/gallery?frame=onboarding/training")
    assert only.text.count('class="tile"') == 1
    none = await studio.client.get("/gallery?q=nothing-like-this")
    assert 'class="empty"' in none.text
    bad = await studio.client.get("/gallery?pose=moonwalk")
    assert 'role="alert"' in bad.text
    english = await studio.client.get("/lang/en?next=/gallery")
    assert english.headers["location"] == "/gallery"
    assert "Your images" in (await studio.client.get("/gallery")).text
    await studio.client.get("/lang/pt-BR?next=/gallery")
    assert "Suas imagens" in (await studio.client.get("/gallery")).text


async def test_a_rejection_needs_a_reason_and_a_bad_review_stores_nothing(studio: Studio) -> None:
    await studio.login()
    csrf = await studio.csrf()
    submitted = await studio.runtime.generation.submit("ana", {"seed": 3})
    await asyncio.wait_for(studio.runtime.worker().run(asyncio.Event(), max_jobs=1), 30)
    here = f"/images/{submitted.job.id}"

    for form, field in (
        ({"verdict": "rejected", "note": "too dark"}, "Motivo"),
        ({"verdict": "rejected", "reason": "ugly"}, "Motivo"),
        ({"verdict": "maybe"}, "Avaliação"),
    ):
        answer = await studio.client.post(f"{here}/review", data={"csrf_token": csrf, **form})
        assert answer.status_code == 422, form
        assert 'id="review-problems" role="alert"' in answer.text
        assert f"<strong>{field}</strong>" in answer.text
        assert await studio.runtime.jobs.review(submitted.job.id) is None
    missing = await studio.client.post(
        f"{here}/review", data={"csrf_token": csrf, "verdict": "rejected", "note": "too dark"}
    )
    assert "Escolha o motivo da reprovação." in missing.text
    assert 'value="too dark"' in missing.text  # what was typed is kept for the next try

    approved = await studio.client.post(
        f"{here}/review", data={"csrf_token": csrf, "verdict": "approved", "note": "on model"}
    )
    assert approved.status_code == 303
    page = await studio.client.get(here)
    assert 'id="review-state">Aprovada</span>' in page.text
    assert "on model" in page.text
    rejected = await studio.client.post(
        f"{here}/review",
        data={"csrf_token": csrf, "verdict": "rejected", "reason": "anatomy"},
    )
    assert rejected.status_code == 303
    stored = await studio.runtime.jobs.review(submitted.job.id)
    assert stored is not None
    assert (stored["review_status"], stored["review_reason"]) == ("rejected", "anatomy")
    page = await studio.client.get(here)
    assert 'id="review-state">Reprovada: Problemas de anatomia</span>' in page.text


async def test_a_revoked_share_link_says_so_in_the_visitors_language(studio: Studio) -> None:
    await studio.login()
    csrf = await studio.csrf()
    submitted = await studio.runtime.generation.submit("ana", {"seed": 4})
    await asyncio.wait_for(studio.runtime.worker().run(asyncio.Event(), max_jobs=1), 30)
    here = f"/images/{submitted.job.id}"
    await studio.client.post(f"{here}/share", data={"csrf_token": csrf})
    (share,) = await studio.runtime.sharing.for_image(submitted.job.id)
    await studio.client.post(f"{here}/revoke", data={"csrf_token": csrf, "share_id": str(share.id)})
    page = await studio.client.get(here)
    assert '<span class="badge">Revogado</span>' in page.text
    broken = await studio.client.post(f"{here}/revoke", data={"csrf_token": csrf, "share_id": "x"})
    assert broken.status_code == 422
    assert 'role="alert"' in broken.text


async def test_the_generate_page_is_drawn_with_its_live_state(studio: Studio) -> None:
    """What the script would show first is in the page already, so nothing moves when it runs."""
    await studio.login()
    page = await studio.client.get("/generate")
    assert '<p class="ok">Pronto para gerar.</p>' in page.text
    prompt = re.search(r'<pre id="prompt" class="prompt" tabindex="0">([^<]+)</pre>', page.text)
    assert prompt is not None
    assert len(prompt.group(1)) > 200  # the compiled prompt of the pack's defaults
    csrf = csrf_of(page.text)
    check = await studio.client.post("/web/check", json={}, headers={"x-csrf-token": csrf})
    assert check.json()["compiled"]["prompt"] == html.unescape(prompt.group(1))

    # a rejected form comes back with its choice, its problems and what that choice rules out
    answer = await studio.client.post(
        "/generate",
        data={"csrf_token": csrf, "pose": "arms-crossed", "props": ["torch"]},
    )
    assert answer.status_code == 422
    torch = re.search(
        r'<label class="check" data-kind="prop" data-option="torch">\s*'
        r'<input type="checkbox" name="props" value="torch" checked>',
        answer.text,
    )
    assert torch is not None  # chosen: kept, never disabled
    phone = re.search(
        r'<label class="check disabled" data-kind="prop" data-option="smartphone">.*?'
        r'<small class="reason">([^<]+)</small>',
        answer.text,
        re.S,
    )
    assert phone is not None
    assert "Braços cruzados" in html.unescape(phone.group(1))
    assert '<button type="submit" class="primary" id="submit" disabled>' in answer.text


async def test_the_image_page_names_parameters_by_their_pack_labels(studio: Studio) -> None:
    await studio.login()
    submitted = await studio.runtime.generation.submit(
        "ana", {"frame": "onboarding/lighting-the-torch", "seed": 12}
    )
    page = await studio.client.get(f"/images/{submitted.job.id}")
    text = html.unescape(page.text)
    assert "Quadro: Acendendo a tocha <code>onboarding/lighting-the-torch</code>" in text
    assert "Semente: 12" in text
    assert "scene_notes" not in text  # unset: not shown
    studio.client.cookies.set("caverna_lang", "en")
    english = await studio.client.get(f"/images/{submitted.job.id}")
    assert "Frame: Lighting the torch" in html.unescape(english.text)
