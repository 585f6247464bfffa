"""Every form of the studio is CSRF-protected, and cookies are Secure whenever the visitor is on
HTTPS, including behind a TLS-terminating proxy.

The forms and routes are enumerated from the templates and the app, so a new one is covered
without editing this file.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

from fastapi.routing import APIRoute

import caverna.web
from caverna.web import admin, gallery_extras, routes, storyboard
from caverna.web.session import LOCALE_COOKIE, LOGIN_CSRF_COOKIE
from tests.web.conftest import PASSWORD, Studio, csrf_of

TEMPLATES = Path(caverna.web.__file__).parent / "templates"
POST_FORM = re.compile(r"<form\b[^>]*method=\"post\"[^>]*>(?P<body>.*?)</form>", re.S | re.I)
CSRF_FIELD = re.compile(r'name="csrf_token"|csrf_field\(\)')
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def test_every_post_form_in_the_templates_carries_the_csrf_token() -> None:
    forms = 0
    missing: list[str] = []
    for template in sorted(TEMPLATES.rglob("*.html")):
        for found in POST_FORM.finditer(template.read_text(encoding="utf-8")):
            forms += 1
            if not CSRF_FIELD.search(found.group("body")):
                missing.append(f"{template.relative_to(TEMPLATES)}: {found.group(0)[:120]}")
    assert forms >= 20  # the scan does see the studio's forms
    assert not missing, "POST forms without a csrf_token field:\n" + "\n".join(missing)


def studio_post_paths() -> list[str]:
    """Every POST route the studio adds to the app (install_web includes these routers)."""
    paths: list[str] = []
    routers = (routes.router, admin.router, gallery_extras.router, storyboard.router)
    for route in (route for router in routers for route in router.routes):
        if not isinstance(route, APIRoute) or "POST" not in (route.methods or set()):
            continue
        if route.path == "/login":
            continue  # before any session: its own token, tested with the sign-in
        filled = route.path.replace("{action}", "delete")
        paths.append(PLACEHOLDER.sub(str(uuid.uuid4()), filled))
    return paths


async def test_every_studio_post_without_the_token_is_refused_and_changes_nothing(
    studio: Studio,
) -> None:
    await studio.login("admin")
    paths = studio_post_paths()
    assert "/generate" in paths
    assert "/admin/keys" in paths
    assert len(paths) >= 15
    keys_before = len(await studio.runtime.accounts.list_keys(None))
    for path in paths:
        for token in ("", "forged-token"):
            answer = await studio.client.post(
                path,
                data={"csrf_token": token, "user_id": "mallory", "sequence_key": "onboarding"},
                headers={"x-csrf-token": token} if token else {},
            )
            assert answer.status_code == 403, (path, token, answer.status_code)
            assert "formulário expirou" in answer.text or "form expired" in answer.text, path
    assert await studio.runtime.jobs.counts() == {}
    assert len(await studio.runtime.accounts.list_keys(None)) == keys_before
    # the session itself still works: the refusals were about the token, not the visitor
    assert (await studio.client.get("/generate")).status_code == 200


async def _login_cookie(studio: Studio, base: str, headers: dict[str, str]) -> str:
    """Signs in and returns the session's Set-Cookie line.

    The login form's own cookie is sent by hand: behind a TLS proxy it is Secure, and this
    client (unlike the browser, which sees https) would keep it back over the plain hop.
    """
    studio.client.cookies.clear()
    page = await studio.client.get(f"{base}/login", headers=headers)
    token = csrf_of(page.text)
    studio.client.cookies.clear()
    answer = await studio.client.post(
        f"{base}/login",
        data={"csrf_token": token, "user": "ana", "password": PASSWORD},
        headers={**headers, "cookie": f"{LOGIN_CSRF_COOKIE}={token}"},
    )
    assert answer.status_code == 303, answer.text
    return next(
        value
        for name, value in answer.headers.multi_items()
        if name == "set-cookie" and value.startswith("caverna_session=")
    )


async def test_the_session_cookie_is_secure_on_https_and_behind_a_tls_proxy(
    studio: Studio,
) -> None:
    plain = await _login_cookie(studio, "http://studio.test", {})
    assert "HttpOnly" in plain
    assert "SameSite=lax" in plain
    assert "Secure" not in plain  # plain HTTP on a laptop: a Secure cookie would never return
    studio.client.cookies.clear()
    direct = await _login_cookie(studio, "https://studio.test", {})
    assert "Secure" in direct
    studio.client.cookies.clear()
    for proxy in (
        {"x-forwarded-proto": "https"},
        {"x-forwarded-proto": "https, http"},
        {"forwarded": 'for=192.0.2.1;proto="https";host=studio.example'},
    ):
        behind = await _login_cookie(studio, "http://studio.test", proxy)
        assert "Secure" in behind, proxy
        assert "HttpOnly" in behind
        studio.client.cookies.clear()
    # the language cookie follows the same rule
    switched = await studio.client.get(
        "/lang/en?next=/gallery", headers={"x-forwarded-proto": "https"}
    )
    assert "Secure" in switched.headers["set-cookie"]


async def test_switching_the_language_keeps_the_filters_of_the_page(studio: Studio) -> None:
    await studio.login()
    page = await studio.client.get("/gallery?pose=arms-crossed&sort=oldest")
    links = re.findall(r'href="(/lang/en\?next=[^"]+)"', page.text)
    assert links, page.text[:400]
    answer = await studio.client.get(links[0].replace("&amp;", "&"))
    assert answer.status_code == 303
    assert answer.headers["location"] == "/gallery?pose=arms-crossed&sort=oldest"
    # ... and a next of another site is still refused
    away = await studio.client.get("/lang/en?next=//evil.example/")
    assert away.headers["location"] == "/generate"


async def test_errors_met_by_a_browser_are_pages_and_clients_still_get_json(
    studio: Studio,
) -> None:
    await studio.login()
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for path, status in (("/galery", 404), ("/images/not-an-id", 404), ("/logout", 405)):
        shown = await studio.client.get(path, headers=browser)
        assert shown.status_code == status, path
        assert shown.headers["content-type"].startswith("text/html"), path
        assert '<a href="/generate">' in shown.text  # a way back into the studio
    # the JSON API and the page scripts keep their problem+json answers
    for path in ("/api/v1/images/not-an-id", "/web/images/not-an-id/status", "/galery"):
        answer = await studio.client.get(path, headers={"accept": "application/json"})
        assert answer.headers["content-type"].startswith("application/problem+json"), path


async def test_a_quota_reached_from_a_page_is_explained_on_a_page(studio: Studio) -> None:
    await studio.runtime.accounts.set_quota("ana", daily_images=1, monthly_usd=None, actor="test")
    await studio.login()
    csrf = await studio.csrf()
    browser = {"accept": "text/html"}
    first = await studio.client.post(
        "/generate", data={"csrf_token": csrf, "seed": "1"}, headers=browser
    )
    assert first.status_code == 303
    again = await studio.client.post(
        f"{first.headers['location']}/regenerate",
        data={"csrf_token": csrf, "seed": "new"},
        headers=browser,
    )
    assert again.status_code == 429
    assert again.headers["content-type"].startswith("text/html")
    assert "Sua cota de imagens" in again.text
    assert 'role="alert"' in again.text


async def test_a_revoked_share_link_opened_in_a_browser_says_so_on_a_page(
    studio: Studio,
) -> None:
    await studio.login()
    csrf = await studio.csrf()
    submitted = await studio.runtime.generation.submit("ana", {"seed": 6})
    await asyncio.wait_for(studio.runtime.worker().run(asyncio.Event(), max_jobs=1), 30)
    here = f"/images/{submitted.job.id}"
    shared = await studio.client.post(f"{here}/share", data={"csrf_token": csrf})
    link = shared.headers["location"].split("shared=", 1)[1]
    (share,) = await studio.runtime.sharing.for_image(submitted.job.id)
    await studio.client.post(f"{here}/revoke", data={"csrf_token": csrf, "share_id": str(share.id)})
    studio.client.cookies.clear()  # whoever got the link: no session at all
    studio.client.cookies.set(LOCALE_COOKIE, "pt-BR")
    page = await studio.client.get(link, headers={"accept": "text/html"})
    assert page.status_code == 403
    assert "Este link expirou ou foi revogado" in page.text
    fetched = await studio.client.get(link, headers={"accept": "image/webp,*/*"})
    assert fetched.status_code == 403
    assert fetched.headers["content-type"].startswith("application/problem+json")
