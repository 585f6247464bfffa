"""Hostile input against the studio: forged session cookies, the sign-in form, the generate and
admin forms, image actions and the studio's path parameters. Each is refused clearly (a page
with the problem, 401 for the script endpoints, or the way back to the sign-in page for a
visitor who is not signed in) and changes nothing; a failed sign-in is audited, a forged session
cookie is not (it cannot be told from one that expired and was cleaned up).

The studio's routes and their path parameters are read from its routers, so a new page is
covered without touching this file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import text

from caverna.api.app import ApiOptions, create_app
from caverna.bootstrap import build_container, open_runtime
from caverna.config import Settings
from caverna.domain.accounts import Role
from caverna.providers.preview import PreviewProvider
from caverna.web import admin, gallery_extras, routes, storyboard
from caverna.web.app import install_web
from caverna.web.session import SESSION_COOKIE
from tests.web.conftest import PASSWORD, Studio, csrf_of

TABLES = (
    "users",
    "api_keys",
    "sequences",
    "generated_images",
    "share_links",
    "bulk_operations",
    "web_sessions",
)
VOLATILE = {"api_keys": {"last_used_at"}}
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
BOTH_DATABASES = pytest.mark.parametrize(
    "hostile", ["sqlite", "postgresql"], indirect=True, ids=["sqlite", "postgresql"]
)

FORGED_COOKIES = {
    "random": "x" * 43,
    "sql": "' OR '1'='1",
    "very-long": "k" * 8_000,
    "percent-nul": "abc%00def",
    "unicode": "\u00e7\u00e3o\u202e",
}
HOSTILE_TEXT = {
    "nul": "abc\x00def",
    "escape": "abc\x1b[31m",
    "bidi-override": "abc\u202edef",
    "sql": "' OR '1'='1' --",
    "traversal": "../../etc/passwd",
    "very-long": "a" * 20_000,
}
PATH_VALUES = {
    "traversal": "../../etc/passwd",
    "dots": "..",
    "nul": "abc\x00def",
    "sql": "' OR '1'='1",
    "very-long": "a" * 3000,
    "bidi-override": "\u202egnp.exe",
}


@pytest.fixture
async def hostile(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Studio]:
    """The studio as in conftest, on SQLite or (with the parameter) PostgreSQL."""
    overrides = {}
    if getattr(request, "param", "sqlite") == "postgresql":
        overrides["database_url"] = request.getfixturevalue("database_url_postgres_clean")
    settings = Settings(data_dir=tmp_path, image_processes=0, **overrides)
    container = build_container(settings)
    runtime = await open_runtime(container, providers={"preview": PreviewProvider()})
    for user, role in (("ana", Role.USER), ("admin", Role.ADMIN)):
        await runtime.accounts.create_key(user, role=role, actor="test")
        await runtime.accounts.set_password(user, PASSWORD, actor="test")
    app = create_app(container, runtime=runtime, options=ApiOptions(run_workers=False))
    install_web(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://studio.test") as client:
        yield Studio(client, runtime)
    await runtime.aclose()


@dataclass(frozen=True)
class Snapshot:
    digests: dict[str, str]
    audit_max: int


async def snapshot(studio: Studio) -> Snapshot:
    digests = {}
    async with studio.runtime.engine.connect() as connection:
        for table in TABLES:
            rows = (await connection.execute(text(f"SELECT * FROM {table}"))).mappings().all()
            kept = sorted(
                json.dumps(
                    {k: v for k, v in row.items() if k not in VOLATILE.get(table, ())},
                    default=str,
                    sort_keys=True,
                )
                for row in rows
            )
            digests[table] = f"{len(kept)}:{hashlib.sha256(''.join(kept).encode()).hexdigest()}"
        audit_max = (await connection.execute(text("SELECT MAX(id) FROM audit_log"))).scalar()
    return Snapshot(digests, int(audit_max or 0))


async def changes(studio: Studio, before: Snapshot) -> tuple[list[str], list[str]]:
    after = await snapshot(studio)
    changed = [t for t in TABLES if after.digests[t] != before.digests[t]]
    async with studio.runtime.engine.connect() as connection:
        written = await connection.execute(
            text("SELECT action FROM audit_log WHERE id > :last ORDER BY id"),
            {"last": before.audit_max},
        )
        return changed, [str(row[0]) for row in written]


class Findings:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def expect(self, case: str, answer: httpx.Response, statuses: set[int]) -> None:
        if answer.status_code not in statuses:
            self.problems.append(f"{case}: {answer.status_code} not in {sorted(statuses)}")
        if answer.status_code >= 500:
            self.problems.append(f"{case}: server error {answer.text[:200]!r}")

    async def unchanged(
        self, studio: Studio, case: str, before: Snapshot, audit: list[str] | None = None
    ) -> None:
        changed, actions = await changes(studio, before)
        if changed:
            self.problems.append(f"{case}: changed {changed}")
        if actions != (audit or []):
            self.problems.append(f"{case}: audit wrote {actions}, expected {audit or []}")

    def assert_none(self) -> None:
        assert not self.problems, f"{len(self.problems)} bad cases:\n" + "\n".join(self.problems)


def studio_routes() -> list[tuple[str, str]]:
    """(method, path template) of every page and form the studio adds."""
    found = []
    for router in (routes.router, admin.router, gallery_extras.router, storyboard.router):
        for route in router.routes:
            if isinstance(route, APIRoute):
                found += [(method, route.path) for method in sorted(route.methods or ())]
    return found


def test_the_studio_routes_are_found() -> None:
    paths = {path for _, path in studio_routes()}
    assert {"/images/{image_id}", "/admin/users/{user_id}", "/generate"} <= paths


async def _seed(studio: Studio) -> str:
    """A completed image of ana's, seen from ana's session."""
    await studio.login("ana")
    token = await studio.csrf()
    answer = await studio.client.post(
        "/generate",
        data={"csrf_token": token, "frame": "onboarding/lighting-the-torch", "seed": "3"},
    )
    assert answer.status_code == 303, answer.text[:500]
    image_id = answer.headers["location"].rsplit("/", 1)[-1]
    await studio.runtime.worker(concurrency=1).run(asyncio.Event(), max_jobs=1)
    return image_id


# -- cookies ---------------------------------------------------------------------------------------


@BOTH_DATABASES
async def test_forged_session_cookies_are_signed_out_visitors(hostile: Studio) -> None:
    studio, found = hostile, Findings()
    image_id = await _seed(studio)
    stale = studio.client.cookies.get(SESSION_COOKIE)
    csrf = await studio.csrf()
    logout = await studio.client.post("/logout", data={"csrf_token": csrf})
    assert logout.status_code == 303
    studio.client.cookies.clear()
    cookies = {**FORGED_COOKIES, "after-logout": str(stale)}
    pages = ["/generate", "/gallery", "/admin", "/storyboard", f"/images/{image_id}"]
    for case, cookie in cookies.items():
        headers = {"cookie": f"{SESSION_COOKIE}={quote(cookie, safe='')}"}
        if case == "after-logout":
            headers = {"cookie": f"{SESSION_COOKIE}={cookie}"}
        for path in pages:
            label = f"GET {path} cookie={case}"
            before = await snapshot(studio)
            answer = await studio.client.get(path, headers=headers)
            found.expect(label, answer, {303})
            if not answer.headers.get("location", "").startswith("/login?next="):
                found.problems.append(f"{label}: not sent to the sign-in page")
            await found.unchanged(studio, label, before)
        for method, path in (("GET", f"/web/images/{image_id}/status"), ("POST", "/generate")):
            label = f"{method} {path} cookie={case}"
            before = await snapshot(studio)
            answer = await studio.client.request(
                method,
                path,
                headers=headers,
                data={"csrf_token": csrf} if method == "POST" else None,
            )
            found.expect(label, answer, {401} if path.startswith("/web/") else {303})
            await found.unchanged(studio, label, before)
    found.assert_none()


# -- signing in ------------------------------------------------------------------------------------


@BOTH_DATABASES
async def test_hostile_sign_in_attempts_are_refused_and_audited(hostile: Studio) -> None:
    studio, found = hostile, Findings()
    cases = {
        f"user-{name}": {"user": value, "password": PASSWORD}
        for name, value in HOSTILE_TEXT.items()
        if len(value) <= 64
    }
    cases |= {
        "password-sql": {"user": "ana", "password": "' OR '1'='1"},
        "password-nul": {"user": "ana", "password": "correct\x00horse"},
        "key-sql": {"api_key": "' OR '1'='1"},
        "key-nul": {"api_key": "cav_\x00"},
        "key-forged": {"api_key": f"cav_{'A' * 43}"},
    }
    for case, fields in cases.items():
        studio.client.cookies.clear()
        page = await studio.client.get("/login")
        token = csrf_of(page.text)
        before = await snapshot(studio)
        answer = await studio.client.post("/login", data={"csrf_token": token, **fields})
        found.expect(f"login {case}", answer, {401})
        if SESSION_COOKIE in answer.cookies:
            found.problems.append(f"login {case}: a session cookie was set")
        await found.unchanged(studio, f"login {case}", before, ["auth_failed"])
    # over the form's limits: refused before any lookup, so nothing to audit
    for case, fields in {
        "user-too-long": {"user": "a" * 65, "password": PASSWORD},
        "password-too-long": {"user": "ana", "password": "p" * 2000},
    }.items():
        before = await snapshot(studio)
        answer = await studio.client.post("/login", data={"csrf_token": "x", **fields})
        found.expect(f"login {case}", answer, {401, 422})
        await found.unchanged(
            studio, f"login {case}", before, ["auth_failed"] if answer.status_code == 401 else []
        )
    found.assert_none()


# -- forms -----------------------------------------------------------------------------------------


async def test_hostile_generate_form_values_are_refused_on_the_page(studio: Studio) -> None:
    found = Findings()
    await studio.login("ana")
    token = await studio.csrf()
    for field in ("pose", "outfit", "footwear", "props", "frame", "aspect_ratio", "scene_notes"):
        for case, value in HOSTILE_TEXT.items():
            if field == "scene_notes" and case in ("sql", "traversal"):
                continue  # free text: quotes and slashes are words like any other there
            label = f"generate {field}={case}"
            before = await snapshot(studio)
            answer = await studio.client.post("/generate", data={"csrf_token": token, field: value})
            found.expect(label, answer, {413, 422})
            if answer.status_code == 422 and "text/html" not in answer.headers["content-type"]:
                found.problems.append(f"{label}: not a page")
            await found.unchanged(studio, label, before)
    found.assert_none()
    assert await studio.runtime.jobs.counts() == {}


async def test_hostile_user_ids_in_the_admin_forms_create_nothing(studio: Studio) -> None:
    found = Findings()
    await studio.login("admin")
    token = await studio.csrf("/admin/users")
    for case, value in HOSTILE_TEXT.items():
        label = f"admin key for user={case}"
        before = await snapshot(studio)
        answer = await studio.client.post(
            "/admin/keys", data={"csrf_token": token, "user_id": value, "name": "x"}
        )
        found.expect(label, answer, {404, 413, 422})
        await found.unchanged(studio, label, before)
        for action, data in (("quota", {"daily_images": "3"}), ("state", {"disabled": "true"})):
            label = f"admin {action} of user={case}"
            before = await snapshot(studio)
            answer = await studio.client.post(
                f"/admin/users/{quote(value, safe='')}/{action}", data={"csrf_token": token, **data}
            )
            found.expect(label, answer, {404, 413, 422})
            await found.unchanged(studio, label, before)
    found.assert_none()


async def test_image_actions_with_hostile_values_change_nothing(studio: Studio) -> None:
    found = Findings()
    image_id = await _seed(studio)
    token = await studio.csrf()
    shared = await studio.client.post(f"/images/{image_id}/share", data={"csrf_token": token})
    assert shared.status_code == 303
    cases = {
        "unknown action": (f"/images/{image_id}/explode", {}, {404}),
        "sql action": (f"/images/{image_id}/{quote(chr(39) + ' OR 1=1', safe='')}", {}, {404}),
        "revoke not a uuid": (f"/images/{image_id}/revoke", {"share_id": "../x"}, {422}),
        "revoke someone else's share": (
            f"/images/{image_id}/revoke",
            {"share_id": str(uuid.uuid4())},
            {303},
        ),
        "review bad verdict": (f"/images/{image_id}/review", {"verdict": "' OR 1=1"}, {422}),
        "review bad reason": (
            f"/images/{image_id}/review",
            {"verdict": "rejected", "reason": "\x00"},
            {422},
        ),
    }
    for case, (path, data, statuses) in cases.items():
        before = await snapshot(studio)
        answer = await studio.client.post(path, data={"csrf_token": token, **data})
        found.expect(case, answer, statuses)
        await found.unchanged(studio, case, before)
    found.assert_none()


# -- path parameters -----------------------------------------------------------------------------


async def test_studio_path_parameters_refuse_traversal_and_injection(studio: Studio) -> None:
    found = Findings()
    await _seed(studio)
    await studio.client.post("/logout", data={"csrf_token": await studio.csrf()})
    await studio.login("admin")
    token = await studio.csrf()
    for method, template in studio_routes():
        names = PLACEHOLDER.findall(template)
        for name in names:
            for case, value in PATH_VALUES.items():
                path = template
                for other in names:
                    chosen = (
                        quote(value, safe="").replace(".", "%2E")
                        if other == name
                        else ("delete" if other == "action" else str(uuid.uuid4()))
                    )
                    path = path.replace(f"{{{other}}}", chosen)
                label = f"{method} {template} {name}={case}"
                before = await snapshot(studio)
                answer = await studio.client.request(
                    method,
                    path,
                    data={"csrf_token": token} if method == "POST" else None,
                    follow_redirects=False,
                )
                # /lang/{code} ignores what it does not know and just goes back
                allowed = set(range(400, 500))
                if template == "/lang/{code}":
                    allowed.add(303)
                found.expect(label, answer, allowed)
                if template == "/lang/{code}" and "set-cookie" in answer.headers:
                    found.problems.append(f"{label}: set a cookie")
                await found.unchanged(studio, label, before)
    found.assert_none()
