"""Hostile and malformed input against every route of the API: each gets a clear 4xx in the
problem shape (a stable `code`, and the field at fault in `errors[]`), and nothing changes: no
row in any table, no stored object, and no audit entry beyond the ones a rejection of that kind
is meant to write (failed authentication, a forged signed link).

The routes, their path and query parameters and their bodies are read from the app's own OpenAPI
document, so a new route is covered without touching this file. Each test walks its table of
cases on one seeded runtime and reports every case that misbehaved at once.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

from caverna.api.app import create_app
from caverna.bootstrap import build_container
from caverna.config import Settings
from caverna.services.sharing import SHARE_PURPOSE
from tests.api.conftest import Api, bearer

PROBLEM_JSON = "application/problem+json"
BOTH_DATABASES = pytest.mark.parametrize(
    "api", [{}, {"database": "postgresql"}], indirect=True, ids=["sqlite", "postgresql"]
)
PREVIEW = "POST /api/v1/prompts/preview"
# every table that requests may write; `counters` holds rate and quota counts, which a rejected
# request may legitimately bump
TABLES = (
    "users",
    "api_keys",
    "sequences",
    "generated_images",
    "prompt_cache",
    "idempotency_keys",
    "share_links",
    "bulk_operations",
    "web_sessions",
)
# written by every authenticated request: not a change the caller made
VOLATILE = {"api_keys": {"last_used_at"}}

PATH_VALUES = {
    "traversal": "../../../../etc/passwd",
    "traversal-dots": "..",
    "traversal-double-encoded": "..%2f..%2fetc%2fpasswd",
    "traversal-backslash": "..\\..\\windows\\win.ini",
    "absolute": "/etc/passwd",
    "nul": "abc\x00def",
    "newline": "abc\r\nX-Injected: 1",
    "sql-quote": "' OR '1'='1",
    "sql-statement": "1; DROP TABLE users; --",
    "very-long": "a" * 5000,
    "fullwidth": "\uff46\uff55\uff4c\uff4c",
    "bidi-override": "\u202egnp.exe",
    "emoji": "\U0001f600",
    "not-a-uuid": "12345",
}
SQL_VALUES = {
    "quote": "' OR '1'='1",
    "comment": "x' OR 1=1 --",
    "union": "') UNION SELECT id, token_hash FROM api_keys --",
    "stacked": "1; DROP TABLE generated_images; --",
    "double-quote": '" OR ""="',
    "like-wildcard": "%%%",
    "like-underscore": "___",
    "nul": "a\x00b",
    "very-long": "a" * 5000,
}
# query parameters where any text is a legitimate value: they answer 200 and must then find
# nothing, since no stored value contains these strings
FREE_TEXT = {"q", "actor", "target", "user"}
BODY_STRINGS = {
    "nul": "abc\x00def",
    "escape": "abc\x1b[31mred",
    "bell": "abc\x07",
    "lone-surrogate": "\ud800",
    "bidi-override": "abc\u202edef",
    "very-long": "a" * 100_000,
}
WRONG_TYPES: dict[str, list[Any]] = {
    "string": [12345, {"a": 1}],
    "integer": ["12", 1.5, True],
    "number": ["1.5", [1]],
    "boolean": ["yes", 1],
    "array": ["x", {"a": 1}],
    "object": [[], "x"],
}
MALFORMED_JSON = {
    "truncated": b'{"seed": 1',
    "single-quotes": b"{'seed': 1}",
    "trailing-comma": b'{"seed": 1,}',
    "not-utf8": b'{"seed": "\xff\xfe"}',
    "nan": b'{"seed": NaN}',
    "bare-word": b"hello",
}
# the few values the schema cannot guess, so that only the value under test is at fault
BASE_BODIES: dict[str, dict[str, Any]] = {
    "POST /api/v1/sequences/generate": {"sequence": "onboarding"},
    "PUT /api/v1/admin/users/{user_id}/state": {"disabled": False},
    "POST /api/v1/admin/bulk": {"action": "delete", "filters": {"user": "nobody"}},
    "PUT /api/v1/images/{image_id}/review": {"verdict": "approved"},
}
SSRF_URLS = {
    "loopback": "https://127.0.0.1/hook",
    "loopback-short": "https://127.1/hook",
    "loopback-decimal": "https://2130706433/hook",
    "loopback-hex": "https://0x7f000001/hook",
    "loopback-octal": "https://0177.0.0.1/hook",
    "loopback-v6": "https://[::1]/hook",
    "mapped-v6": "https://[::ffff:127.0.0.1]/hook",
    "metadata": "https://169.254.169.254/latest/meta-data/",
    "private": "https://10.0.0.1/hook",
    "unspecified": "https://0.0.0.0/hook",
    "localhost-name": "https://localhost/hook",
    "plain-http": "http://hooks.example.com/hook",
    "file": "file:///etc/passwd",
    "gopher": "gopher://hooks.example.com/_stats",
    "javascript": "javascript:alert(1)",
    "credentials": "https://user:secret@hooks.example.com/hook",
    "suffix-trick": "https://hooks.example.com.evil.test/hook",
    "userinfo-trick": "https://hooks.example.com@evil.test/hook",
    "fragment-trick": "https://evil.test#@hooks.example.com/hook",
    "newline": "https://hooks.example.com/\r\nX-Injected: 1",
    "too-long": "https://hooks.example.com/" + "a" * 2100,
    "empty": "",
    "no-scheme": "hooks.example.com/hook",
}
# allowed on purpose, so that the refusals above come from the address checks, not the list
SSRF_SETTINGS = {
    "webhook_allowed_hosts": "hooks.example.com,127.0.0.1,169.254.169.254,10.0.0.1,0.0.0.0"
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    schema: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def parameters(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.schema.get("parameters", []) if p["in"] == where]

    @property
    def secured(self) -> bool:
        return bool(self.schema.get("security"))


def _openapi() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder), image_processes=0)
        return create_app(build_container(settings)).openapi()


OPENAPI = _openapi()
OPERATIONS = [
    Operation(method.upper(), path, operation)
    for path, methods in OPENAPI["paths"].items()
    for method, operation in methods.items()
]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its $ref and nullable anyOf unwrapped (enough for request bodies)."""
    while True:
        if "$ref" in schema:
            schema = OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s.get("type") != "null"]
            if len(options) > 1:
                return {"anyOf": options}  # a real union: no single type to get wrong
            schema = options[0]
        else:
            return schema


def body_schema(operation: Operation) -> dict[str, Any] | None:
    content = operation.schema.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    return _resolve(content["application/json"]["schema"])


@dataclass
class World:
    """The seeded data: ids that exist, for the parameters that are not under test."""

    api: Api
    image_id: str
    share_id: str
    share_token: str
    sequence_id: str
    key_id: str
    values: dict[str, str] = field(default_factory=dict)

    def fill(self, path: str, name: str | None = None, value: str = "") -> str:
        """The path with every parameter set to an id that exists, `name` to `value` (quoted)."""
        known = {
            "image_id": self.image_id,
            "share_id": self.share_id,
            "sequence_id": self.sequence_id,
            "key_id": self.key_id,
            "operation_id": str(uuid.uuid4()),
            "user_id": "ana",
            "token": self.share_token,
            "key": "images/none.webp",
        }
        for param, default in known.items():
            # dots encoded too: a client would otherwise resolve '..' before sending the path
            chosen = quote(value, safe="").replace(".", "%2E") if param == name else default
            path = path.replace(f"{{{param}}}", chosen).replace(f"{{{param}:path}}", chosen)
        assert "{" not in path, path
        return path


@pytest.fixture
async def world(api: Api) -> World:
    image_id = await api.generate(api.ana, frame="onboarding/lighting-the-torch", seed=3)
    answer = await api.client.post(
        "/api/v1/sequences/generate", json={"sequence": "onboarding", "seed": 5}, headers=api.ana
    )
    assert answer.status_code == 202, answer.text
    frames = len(answer.json()["frames"])
    await api.drain(1 + frames)
    shared = await api.client.post(f"/api/v1/images/{image_id}/share", headers=api.ana)
    assert shared.status_code == 201, shared.text
    keys = await api.client.get("/api/v1/admin/keys", headers=api.admin, params={"user": "bob"})
    return World(
        api,
        image_id=image_id,
        share_id=shared.json()["share_id"],
        share_token=shared.json()["url"].rsplit("/", 1)[-1],
        sequence_id=answer.json()["sequence_id"],
        key_id=keys.json()[0]["key_id"],
    )


@dataclass(frozen=True)
class Snapshot:
    digests: dict[str, str]
    audit_max: int
    objects: tuple[str, ...]


async def snapshot(api: Api) -> Snapshot:
    digests = {}
    async with api.runtime.engine.connect() as connection:
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
    objects = tuple(sorted(await api.runtime.store.list_keys("")))
    return Snapshot(digests, int(audit_max or 0), objects)


async def changes(api: Api, before: Snapshot) -> tuple[list[str], list[str]]:
    """What differs from `before` (besides the audit log), and the audit actions written since."""
    after = await snapshot(api)
    changed = [t for t in TABLES if after.digests[t] != before.digests[t]]
    if after.objects != before.objects:
        changed.append("objects")
    async with api.runtime.engine.connect() as connection:
        written = await connection.execute(
            text("SELECT action FROM audit_log WHERE id > :last ORDER BY id"),
            {"last": before.audit_max},
        )
        actions = [str(row[0]) for row in written]
    return changed, actions


def _is_field(reported: str, name: str) -> bool:
    """`name`, one of its items (props[0]) or members, or the same field of each storyboard
    frame (frames[the-invitation].outfit): a storyboard checks shared values per frame."""
    lowered = reported.lower()
    return (
        lowered == name
        or lowered.startswith((f"{name}.", f"{name}["))
        or (lowered.startswith("frames[") and lowered.endswith(f".{name}"))
        or lowered == f"header.{name}"
    )


@dataclass
class Findings:
    """Every misbehaving case of a table, reported together."""

    problems: list[str] = field(default_factory=list)

    def check(
        self,
        case: str,
        answer: httpx.Response,
        *,
        statuses: Iterator[int] | range | set[int] = range(400, 500),
        field_name: str | None = None,
        code: str | None = None,
    ) -> bool:
        where = f"{case}: {answer.status_code} {answer.text[:200]!r}"
        if answer.status_code not in statuses:
            self.problems.append(f"{where}: status not in {statuses}")
            return False
        if answer.headers.get("content-type") != PROBLEM_JSON:
            self.problems.append(f"{where}: not problem+json")
            return False
        body = answer.json()
        if not isinstance(body.get("code"), str) or body.get("status") != answer.status_code:
            self.problems.append(f"{where}: no stable code or status")
            return False
        if code is not None and body["code"] != code:
            self.problems.append(f"{where}: code {body['code']!r} is not {code!r}")
        if field_name is not None and answer.status_code == 422:
            self.names_field(where, body, field_name)
        return True

    def names_field(self, where: str, body: dict[str, Any], field_name: str) -> None:
        fields = [str(error.get("field", "")) for error in body.get("errors") or []]
        if not any(_is_field(f, field_name) for f in fields):
            self.problems.append(f"{where}: errors[] names {fields}, not {field_name!r}")

    def check_preview(self, case: str, answer: httpx.Response, field_name: str) -> None:
        """The prompt preview reports problems in a 200 (`valid: false`) by design."""
        body = answer.json()
        if answer.status_code != 200 or body.get("valid") is not False:
            self.check(case, answer, field_name=field_name)
        else:
            self.names_field(f"{case}: {body}", body, field_name)

    async def unchanged(
        self, api: Api, case: str, before: Snapshot, audit: list[str] | None = None
    ) -> None:
        changed, actions = await changes(api, before)
        if changed:
            self.problems.append(f"{case}: changed {changed}")
        if actions != (audit or []):
            self.problems.append(f"{case}: audit wrote {actions}, expected {audit or []}")

    def assert_none(self) -> None:
        assert not self.problems, f"{len(self.problems)} bad cases:\n" + "\n".join(self.problems)


def _request_body(operation: Operation) -> dict[str, Any] | None:
    return dict(BASE_BODIES.get(operation.label, {})) if body_schema(operation) else None


def _link_audit(answer: httpx.Response) -> list[str]:
    """A forged signed link is audited like a forged key (one too short to be a link is refused
    before it is read, and a genuine expired one is not an attack)."""
    forged = answer.status_code == 403 and answer.json().get("code") == "invalid_link"
    return ["auth_failed"] if forged else []


def _required_query(operation: Operation) -> dict[str, str]:
    """Well-formed values for the required query parameters (a media link's expiry and
    signature), so that the value under test is the only fault."""
    known = {"expires": "9999999999", "sig": "A" * 43}
    return {p["name"]: known[p["name"]] for p in operation.parameters("query") if p["required"]}


# -- path parameters ---------------------------------------------------------------------------


@BOTH_DATABASES
async def test_path_parameters_refuse_traversal_and_injection(world: World) -> None:
    api, found = world.api, Findings()
    for operation in OPERATIONS:
        for parameter in operation.parameters("path"):
            name = parameter["name"]
            is_uuid = parameter["schema"].get("format") == "uuid"
            for case, value in PATH_VALUES.items():
                if case == "not-a-uuid" and not is_uuid:
                    continue  # digits are a valid user id or key
                label = f"{operation.label} {name}={case}"
                before = await snapshot(api)
                answer = await api.client.request(
                    operation.method,
                    world.fill(operation.path, name, value),
                    params=_required_query(operation),
                    headers=api.admin,
                    json=_request_body(operation),
                )
                found.check(label, answer, field_name=name)
                await found.unchanged(api, label, before, _link_audit(answer))
    found.assert_none()


# -- bodies ------------------------------------------------------------------------------------


def _body_operations() -> list[Operation]:
    return [operation for operation in OPERATIONS if body_schema(operation) is not None]


def test_the_body_routes_are_found() -> None:
    labels = {operation.label for operation in _body_operations()}
    assert {"POST /api/v1/images/generate", "POST /api/v1/sequences/generate"} <= labels


async def test_malformed_and_mistyped_bodies_are_refused(world: World) -> None:
    api, found = world.api, Findings()
    json_headers = {**api.admin, "content-type": "application/json"}
    for operation in _body_operations():
        path = world.fill(operation.path)
        schema = body_schema(operation) or {}
        for case, raw in MALFORMED_JSON.items():
            label = f"{operation.label} body {case}"
            before = await snapshot(api)
            answer = await api.client.request(
                operation.method, path, content=raw, headers=json_headers
            )
            found.check(label, answer, statuses={400, 422})
            await found.unchanged(api, label, before)
        for case, whole in {"array": [], "string": "x", "number": 1}.items():
            label = f"{operation.label} body is a {case}"
            before = await snapshot(api)
            answer = await api.client.request(operation.method, path, json=whole, headers=api.admin)
            found.check(label, answer, statuses={422})
            await found.unchanged(api, label, before)
        for name, property_schema in schema.get("properties", {}).items():
            kind = _resolve(property_schema).get("type")
            for wrong in WRONG_TYPES.get(str(kind), []):
                label = f"{operation.label} {name}={wrong!r}"
                before = await snapshot(api)
                body = {**(_request_body(operation) or {}), name: wrong}
                answer = await api.client.request(
                    operation.method, path, json=body, headers=api.admin
                )
                found.check(label, answer, statuses={422}, field_name=name)
                await found.unchanged(api, label, before)
    found.assert_none()


def _string_fields(schema: dict[str, Any]) -> list[tuple[str, bool]]:
    """Names of the string properties, and whether each is a list of strings."""
    fields = []
    for name, property_schema in schema.get("properties", {}).items():
        resolved = _resolve(property_schema)
        if resolved.get("type") == "string" and "enum" not in resolved:
            fields.append((name, False))
        elif resolved.get("type") == "array" and _resolve(resolved.get("items", {})).get(
            "type"
        ) == ("string"):
            fields.append((name, True))
    return fields


@BOTH_DATABASES
async def test_control_characters_unicode_tricks_and_long_strings_are_refused(
    world: World,
) -> None:
    api, found = world.api, Findings()
    for operation in _body_operations():
        path = world.fill(operation.path)
        for name, is_list in _string_fields(body_schema(operation) or {}):
            for case, value in BODY_STRINGS.items():
                label = f"{operation.label} {name}={case}"
                body = {**(_request_body(operation) or {}), name: [value] if is_list else value}
                # json.dumps escapes a lone surrogate as \ud800, which JSON allows but UTF-8 not
                raw = json.dumps(body).encode()
                before = await snapshot(api)
                answer = await api.client.request(
                    operation.method,
                    path,
                    content=raw,
                    headers={**api.admin, "content-type": "application/json"},
                )
                if operation.label == PREVIEW:
                    found.check_preview(label, answer, name)
                else:
                    found.check(label, answer, field_name=name)
                await found.unchanged(api, label, before)
    found.assert_none()


async def test_oversized_bodies_are_refused_whether_declared_or_streamed(world: World) -> None:
    api, found = world.api, Findings()
    big = json.dumps({"scene_notes": "a" * 300_000}).encode()

    async def streamed() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 16_384):
            yield big[start : start + 16_384]

    for operation in _body_operations():
        path = world.fill(operation.path)
        headers = {**api.admin, "content-type": "application/json"}
        for case in ("declared", "streamed"):
            label = f"{operation.label} {case} 300 KB"
            before = await snapshot(api)
            content = big if case == "declared" else streamed()
            answer = await api.client.request(
                operation.method, path, content=content, headers=headers
            )
            found.check(label, answer, statuses={413}, code="body_too_large")
            await found.unchanged(api, label, before)
    found.assert_none()


# -- query parameters: filters and search --------------------------------------------------------


def _query_operations() -> list[Operation]:
    return [operation for operation in OPERATIONS if operation.parameters("query")]


def test_the_filter_routes_are_found() -> None:
    labels = {operation.label for operation in _query_operations()}
    assert {"GET /api/v1/images/user/{user_id}", "GET /api/v1/admin/audit"} <= labels


@BOTH_DATABASES
async def test_injection_in_filters_and_search_finds_nothing_and_changes_nothing(
    world: World,
) -> None:
    api, found = world.api, Findings()
    for operation in _query_operations():
        if operation.method != "GET":
            continue
        path = world.fill(operation.path)
        required = {
            p["name"]: "1" for p in operation.parameters("query") if p.get("required", False)
        }
        for parameter in operation.parameters("query"):
            name = parameter["name"]
            for case, value in SQL_VALUES.items():
                label = f"{operation.label} ?{name}={case}"
                before = await snapshot(api)
                answer = await api.client.get(
                    path, params={**required, name: value}, headers=api.admin
                )
                if answer.status_code == 200 and name in FREE_TEXT:
                    body = answer.json()
                    items = body.get("items") if isinstance(body, dict) else body
                    if items:
                        found.problems.append(f"{label}: found {len(items)} rows")
                else:
                    found.check(label, answer, field_name=name)
                await found.unchanged(api, label, before, _link_audit(answer))
    found.assert_none()


@BOTH_DATABASES
async def test_search_sees_only_the_callers_images(world: World) -> None:
    api = world.api
    await api.generate(api.bob, frame="onboarding/lighting-the-torch", seed=9)
    for value in ("' OR '1'='1", "%", "_", "\\", "x' OR user_id<>'ana"):
        answer = await api.client.get(
            "/api/v1/images/user/ana", params={"q": value}, headers=api.ana
        )
        assert answer.status_code == 200, (value, answer.text)
        assert answer.json()["items"] == [], value
        other = await api.client.get(
            "/api/v1/images/user/bob", params={"q": value}, headers=api.ana
        )
        assert other.status_code == 404, value


# -- authentication ------------------------------------------------------------------------------

FORGED_KEYS = {
    "unknown-key": (f"Bearer cav_{'A' * 43}", "invalid_key"),
    "sql-key": ("Bearer ' OR '1'='1", "invalid_key"),
    "long-key": ("Bearer " + "k" * 10_240, "invalid_key"),
    "control-key": ("Bearer cav_\x01\x02\x7f", "invalid_key"),
    "basic": ("Basic YWRtaW46YWRtaW4=", "unauthorized"),
    "empty": ("Bearer ", "unauthorized"),
}


async def test_forged_keys_are_refused_and_audited_on_every_secured_route(world: World) -> None:
    api, found = world.api, Findings()
    for operation in OPERATIONS:
        if not operation.secured:
            continue
        path = world.fill(operation.path)
        for case, (header, code) in FORGED_KEYS.items():
            label = f"{operation.label} {case}"
            before = await snapshot(api)
            answer = await api.client.request(
                operation.method,
                path,
                headers=[(b"Authorization", header.encode("latin-1"))],
                json=_request_body(operation),
            )
            refused = found.check(label, answer, statuses={401}, code=code)
            if refused and answer.headers.get("www-authenticate") != "Bearer":
                found.problems.append(f"{label}: no WWW-Authenticate: Bearer")
            audited = ["auth_failed"] if code == "invalid_key" else []
            await found.unchanged(api, label, before, audited)
    found.assert_none()


@BOTH_DATABASES
async def test_auth_failures_on_hostile_paths_are_still_audited(world: World) -> None:
    api, found = world.api, Findings()
    paths = {
        "nul": "/api/v1/images/abc%00def/status",
        "control": "/api/v1/images/user/%1b%5b31m",
        "sql": "/api/v1/images/user/'%20OR%20'1'='1",
    }
    for case, path in paths.items():
        before = await snapshot(api)
        answer = await api.client.get(path, headers=bearer(f"cav_{'N' * 43}"))
        found.check(case, answer, statuses={401}, code="invalid_key")
        await found.unchanged(api, case, before, ["auth_failed"])
    found.assert_none()


async def test_auth_failures_record_what_was_tried_but_never_the_key(world: World) -> None:
    api = world.api
    forged = f"cav_{'Z' * 43}"
    answer = await api.client.get("/api/v1/catalog", headers=bearer(forged))
    assert answer.status_code == 401
    page = await api.client.get(
        "/api/v1/admin/audit", params={"action": "auth_failed"}, headers=api.admin
    )
    entry = page.json()["items"][0]
    assert entry["actor"] == "anonymous"
    assert entry["details"]["path"] == "/api/v1/catalog"
    assert entry["details"]["key_prefix"] == forged[:8]
    assert forged not in json.dumps(entry)


# -- webhooks: server-side request forgery -------------------------------------------------------


@pytest.mark.parametrize("api", [SSRF_SETTINGS], indirect=True, ids=["allowlisted"])
async def test_callback_urls_that_reach_inside_are_refused(world: World) -> None:
    api, found = world.api, Findings()
    routes = {
        "/api/v1/images/generate": {"frame": "onboarding/lighting-the-torch", "seed": 77},
        "/api/v1/sequences/generate": {"sequence": "onboarding", "seed": 77},
    }
    for path, base in routes.items():
        for case, url in SSRF_URLS.items():
            label = f"POST {path} callback_url={case}"
            before = await snapshot(api)
            answer = await api.client.post(
                path, json={**base, "callback_url": url}, headers=api.ana
            )
            found.check(label, answer, statuses={422}, field_name="callback_url")
            await found.unchanged(api, label, before)
    found.assert_none()
    # the same request to an allowed public host is accepted: the refusals are the addresses
    accepted = await api.client.post(
        "/api/v1/images/generate",
        json={**routes["/api/v1/images/generate"], "callback_url": "https://hooks.example.com/x"},
        headers=api.ana,
    )
    assert accepted.status_code == 202, accepted.text


# -- signed links --------------------------------------------------------------------------------


def _tamper(token: str, part: int, change: str) -> str:
    parts = token.split(".")
    parts[part] = change
    return ".".join(parts)


async def test_forged_expired_and_revoked_share_links_are_refused(world: World) -> None:
    api, found = world.api, Findings()
    token = world.share_token
    subject, expires, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    past = datetime.now(UTC) - timedelta(minutes=5)
    expired = api.runtime.sharing.signer.sign(SHARE_PURPOSE, subject, past)
    forged = {
        "signature-flipped": _tamper(token, 2, flipped),
        "expiry-extended": _tamper(token, 1, str(int(expires) + 86_400)),
        "other-share": _tamper(token, 0, uuid.uuid4().hex),
        "no-signature": _tamper(token, 2, ""),
        "garbage": "x" * 40,
        "two-parts": f"{subject}.{expires}",
        "huge-expiry": _tamper(token, 1, "9" * 12),
    }
    for case, value in forged.items():
        label = f"share link {case}"
        before = await snapshot(api)
        answer = await api.client.get(f"/s/{quote(value, safe='')}")
        found.check(label, answer, statuses={403}, code="invalid_link")
        await found.unchanged(api, label, before, ["auth_failed"])
    # an expired or revoked link is genuine: refused, but not an attack worth an audit entry
    label = "share link expired"
    before = await snapshot(api)
    answer = await api.client.get(f"/s/{subject}.{expired.expires}.{expired.signature}")
    found.check(label, answer, statuses={403}, code="invalid_link")
    await found.unchanged(api, label, before)
    revoked = await api.client.delete(
        f"/api/v1/images/{world.image_id}/shares/{world.share_id}", headers=api.ana
    )
    assert revoked.status_code == 204
    before = await snapshot(api)
    answer = await api.client.get(f"/s/{token}")
    found.check("share link revoked", answer, statuses={403}, code="invalid_link")
    await found.unchanged(api, "share link revoked", before)
    found.assert_none()


async def test_forged_media_signatures_are_refused_and_audited(world: World) -> None:
    api, found = world.api, Findings()
    status = await api.client.get(f"/api/v1/images/{world.image_id}/status", headers=api.ana)
    url = httpx.URL(status.json()["url"])
    good = await api.client.get(url)
    assert good.status_code == 200
    cases = {
        "flipped": url.copy_merge_params({"sig": "A" * 43}),
        "extended": url.copy_set_param("expires", str(int(url.params["expires"]) + 3600)),
        "other-object": url.copy_with(path=url.path.replace(world.image_id, str(uuid.uuid4()))),
    }
    for case, forged in cases.items():
        label = f"media link {case}"
        before = await snapshot(api)
        answer = await api.client.get(forged)
        found.check(label, answer, statuses={403}, code="invalid_link")
        await found.unchanged(api, label, before, ["auth_failed"])
    found.assert_none()


# -- headers ---------------------------------------------------------------------------------------


async def test_bad_idempotency_keys_are_refused(world: World) -> None:
    api, found = world.api, Findings()
    body = {"frame": "onboarding/lighting-the-torch", "seed": 123}
    for case, key in {"very-long": "k" * 201}.items():
        label = f"Idempotency-Key {case}"
        before = await snapshot(api)
        answer = await api.client.post(
            "/api/v1/images/generate", json=body, headers={**api.ana, "Idempotency-Key": key}
        )
        found.check(label, answer, statuses={422}, field_name="idempotency-key")
        await found.unchanged(api, label, before)
    found.assert_none()
