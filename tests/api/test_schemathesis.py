"""Every operation of the OpenAPI schema, fuzzed by schemathesis: no 5xx, and every answer is one
the schema documents (status code, content type, body schema, headers).

The app is built like conftest's, but its lifespan runs inside schemathesis' ASGI event loop (a
runtime opened on pytest's loop could not be used there), with the embedded workers, so images
really complete. Two passes, each on its own data: an admin (admin routes reachable) and a normal
user. Path parameters are drawn from ids that exist (the caller's images, someone else's, a
sequence, share links, keys) as well as generated ones, so found and not-found paths are both
exercised; the same goes for a correctly signed media link beside forged ones, and for a valid,
a bogus and a missing key.

Hypothesis drives each operation directly rather than through schemathesis' pytest plugin, whose
fixture-based loader does not work with this pytest.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from caverna.api.app import ApiOptions, create_app
from caverna.bootstrap import build_container
from caverna.config import Settings
from caverna.domain.accounts import NewKey

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
MAX_EXAMPLES = 25
# body values generation would hardly ever guess, so the accepting path is fuzzed too
BODY_HINTS = {"sequence": "onboarding"}
SETTLE_SECONDS = 60.0
# the whole test stays bounded even if an answer hangs (an event stream that never ends)
REQUEST_TIMEOUT_SECONDS = 10


def _settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        image_processes=0,
        worker_concurrency=2,
        # the limiter has its own tests; here it would turn most answers into 429s
        api_rate_limit="1000000/minute",
    )


def _operations() -> list[str]:
    """Read from the app itself, so a new route is fuzzed without touching this file."""
    with tempfile.TemporaryDirectory() as folder:
        paths = create_app(build_container(_settings(Path(folder)))).openapi()["paths"]
    return [f"{method.upper()} {path}" for path, methods in paths.items() for method in methods]


@dataclass
class Known:
    """What a pass knows beyond the schema: its key, and values that exist."""

    schema: schemathesis.BaseSchema
    headers: dict[str, str]
    path_values: dict[str, list[str]]
    # what an operation that destroys may destroy: the data the other operations read stays
    doomed: dict[str, dict[str, list[str]]]
    media: list[tuple[str, dict[str, str]]]

    def values(self, label: str, name: str) -> list[str]:
        return self.doomed.get(label, {}).get(name) or self.path_values.get(name, [])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Seeder:
    """Makes the data through the API itself, on the app's own event loop."""

    def __init__(self, client: Any, admin: dict[str, str]) -> None:
        self.client = client
        self.admin = admin

    def call(self, method: str, path: str, who: dict[str, str], expect: int, **kw: Any) -> Any:
        answer = self.client.request(method, path, headers=who, timeout=30, **kw)
        assert answer.status_code == expect, (method, path, answer.status_code, answer.text)
        return answer.json() if answer.content else None

    def key(self, user: str) -> tuple[dict[str, str], str]:
        made = self.call(
            "POST", f"/api/v1/admin/users/{user}/keys", self.admin, 201, json={"role": "user"}
        )
        return bearer(made["token"]), str(made["key"]["key_id"])

    def generate(self, who: dict[str, str], seed: int) -> str:
        body = {"frame": "onboarding/lighting-the-torch", "seed": seed}
        return str(self.call("POST", "/api/v1/images/generate", who, 202, json=body)["image_id"])

    def wait_final(self, who: dict[str, str], image_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            status: dict[str, Any] = self.call("GET", f"/api/v1/images/{image_id}/status", who, 200)
            if status["status"] in ("completed", "failed", "cancelled"):
                return status
            time.sleep(0.05)
        raise AssertionError(f"image {image_id} did not finish")

    def share(self, who: dict[str, str], image_id: str) -> tuple[str, str]:
        made = self.call("POST", f"/api/v1/images/{image_id}/share", who, 201, json={})
        return str(made["share_id"]), urlsplit(made["url"]).path.rsplit("/", 1)[1]


def media_link(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return unquote(parts.path.removeprefix("/media/")), dict(parse_qsl(parts.query))


@pytest.fixture(scope="module", params=["admin", "user"])
def known(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Known]:
    announced: list[NewKey] = []
    app = create_app(
        build_container(_settings(tmp_path_factory.mktemp(str(request.param)))),
        options=ApiOptions(events_poll_seconds=0.05, announce_admin_key=announced.append),
    )
    config = schemathesis.Config.from_dict(
        {
            "request-timeout": REQUEST_TIMEOUT_SECONDS,
            # enough for a finished image's whole stream (retry, status, end); a running one's is
            # cut there, so a stream never holds an example for long
            "max-stream-events": 4,
            # the key is chosen below (the caller's, a bogus one or none), never generated
            "generation": {"with-security-parameters": False},
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    try:
        with asgi.get_client(cast("asgi.ASGIApp", app)) as client:
            seed = Seeder(client, bearer(announced[0].token))
            ana, _ = seed.key("ana")
            _, bob_key = seed.key("bob")
            mine, other = (seed.admin, ana) if request.param == "admin" else (ana, seed.admin)
            done, theirs = seed.generate(mine, 1), seed.generate(other, 2)
            doomed = [seed.generate(mine, 3), seed.generate(other, 4)]
            sequence = seed.call(
                "POST", "/api/v1/sequences/generate", mine, 202, json={"sequence": "onboarding"}
            )
            status = seed.wait_final(mine, done)
            seed.wait_final(other, theirs)
            share_id, token = seed.share(mine, done)
            doomed_share, _ = seed.share(mine, done)
            _, their_token = seed.share(other, theirs)
    except BaseException:
        asgi.shutdown_lifespans()
        raise
    yield Known(
        schema=schema,
        headers=mine,
        path_values={
            "image_id": [done, theirs, str(sequence["image_ids"][0])],
            "share_id": [share_id],
            "sequence_id": [str(sequence["sequence_id"])],
            "user_id": ["admin", "ana", "bob"],
            "key_id": [bob_key],  # never the caller's own: revoking it would end the pass
            "token": [token, their_token],
        },
        doomed={
            "DELETE /api/v1/images/{image_id}": {"image_id": doomed},
            "DELETE /api/v1/images/{image_id}/shares/{share_id}": {"share_id": [doomed_share]},
        },
        media=[media_link(status["url"]), media_link(status["thumbnail_url"])],
    )
    asgi.shutdown_lifespans()


@pytest.mark.parametrize("label", _operations())
def test_operation_answers_as_documented(known: Known, label: str) -> None:
    method, path = label.split(" ", 1)
    operation = known.schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    # mostly the caller's key (also the simplest choice, where hypothesis often lands), now and
    # then none, or one that does not exist
    auth = st.integers(0, 7).map(
        lambda pick: {6: {}, 7: bearer("cav_" + "x" * 43)}.get(pick, known.headers)
    )

    @hypothesis.given(case=cases, data=st.data())
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def fuzz(case: schemathesis.Case[Any], data: st.DataObject) -> None:
        for name, generated in list((case.path_parameters or {}).items()):
            existing = known.values(label, name)
            if existing:
                case.path_parameters[name] = data.draw(st.sampled_from([generated, *existing]))
        if isinstance(case.body, dict):
            for name, value in BODY_HINTS.items():
                if name in case.body and data.draw(st.booleans(), label=f"known {name}"):
                    case.body[name] = value
        if path == "/media/{key}" and data.draw(st.booleans()):
            key, query = data.draw(st.sampled_from(known.media))
            case.path_parameters["key"] = key
            case.query = query
        case.call_and_validate(headers=data.draw(auth, label="auth"), checks=CHECKS)

    fuzz()
