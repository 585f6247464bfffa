"""Completion webhooks end to end: a real receiver on loopback, signed POSTs, retries, refusals.

The receiver is an aiohttp server on 127.0.0.1; the tests that use it allow private addresses
and put 127.0.0.1 on the allowlist, as a local demo would. The dispatcher is driven through its
own loop (`run`) or one round at a time (`run_once`), exactly as the background task does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web

from caverna.bootstrap import webhook_secret
from caverna.providers.base import ErrorKind, provider_error
from caverna.services.webhooks import WebhookState
from tests.api.conftest import Api
from tests.doubles import ScriptedProvider
from tests.fakes.base import LoopbackServer

FRAME = {"frame": "onboarding/lighting-the-torch", "seed": 77}
SECRET = "receiver-shared-secret-0123"
LOCAL = {
    "webhook_allowed_hosts": "127.0.0.1",
    "webhook_allow_private": True,
    "webhook_secret": SECRET,
    "webhook_backoff_seconds": 0.01,
}
PUBLIC_ONLY = {"webhook_allowed_hosts": "hooks.example.com,10.0.0.1,169.254.169.254,::1"}


class Receiver(LoopbackServer):
    """Records every POST to /hook and answers with the scripted statuses, then 200."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        super().__init__()
        self.statuses = deque(statuses)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=self.statuses.popleft() if self.statuses else 200)

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


def verify(secret: bytes, header: str, body: bytes) -> int:
    """What a receiver does: recompute the HMAC over "<t>.<body>"; returns the timestamp."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    assert set(fields) == {"t", "v1"}
    expected = hmac.new(secret, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"])
    return int(fields["t"])


async def generate(api: Api, callback_url: str, **params: object) -> str:
    return await api.generate(api.ana, **{**FRAME, **params}, callback_url=callback_url)


async def state(api: Api, image_id: str) -> WebhookState:
    found = await api.runtime.webhooks.state(uuid.UUID(image_id))
    assert found is not None
    return found


async def rounds_until(
    api: Api, image_id: str, done: Callable[[WebhookState], bool], timeout: float = 15.0
) -> WebhookState:
    """Dispatcher rounds (with a short pause between them) until the webhook's state says so."""
    async with asyncio.timeout(timeout):
        while True:
            await api.runtime.webhooks.run_once()
            current = await state(api, image_id)
            if done(current):
                return current
            await asyncio.sleep(0.02)


def final(current: WebhookState) -> bool:
    return current.status != "pending"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("api", [LOCAL], indirect=True)
async def test_a_completed_image_is_announced_with_a_signed_post(api: Api) -> None:
    async with Receiver() as receiver:
        image_id = await generate(api, receiver.url)
        pending = await state(api, image_id)
        assert (pending.url, pending.status, pending.attempts) == (receiver.url, "pending", 0)
        assert await api.runtime.webhooks.run_once() == 0  # not before the job is final

        stop = asyncio.Event()
        loop = asyncio.create_task(api.runtime.webhooks.run(stop))
        try:
            await api.drain(1)
            await asyncio.wait_for(receiver.arrived.wait(), 10)
        finally:
            stop.set()
            await loop

        assert len(receiver.received) == 1
        headers, body = receiver.received[0]
        assert headers["Content-Type"] == "application/json"
        assert headers["Caverna-Event"] == "image.completed"
        assert uuid.UUID(headers["Caverna-Delivery"])
        signed_at = verify(SECRET.encode(), headers["Caverna-Signature"], body)
        assert abs(signed_at - time.time()) < 60
        payload = json.loads(body)
        assert payload["event"] == "image.completed"
        assert payload["image_id"] == image_id
        assert payload["status"] == "completed"
        assert payload["error"] is None
        assert payload["url"] == f"/api/v1/images/{image_id}/status"
        assert datetime.fromisoformat(payload["delivered_at"]).tzinfo is not None
        status = await api.client.get(payload["url"], headers=api.ana)
        assert status.json()["status"] == "completed"

        delivered = await state(api, image_id)
        assert (delivered.status, delivered.attempts, delivered.error) == ("delivered", 1, None)
        assert await api.runtime.webhooks.run_once() == 0  # delivered once, never again
        assert len(receiver.received) == 1


@pytest.mark.parametrize("api", [{**LOCAL, "webhook_secret": None}], indirect=True)
async def test_failed_and_cancelled_images_are_announced_too(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing = ScriptedProvider(
        "preview", errors=deque([provider_error(ErrorKind.INVALID_REQUEST, "prompt refused")])
    )
    monkeypatch.setitem(api.runtime.processor.providers, "preview", refusing)
    async with Receiver() as receiver:
        failed_id = await generate(api, receiver.url)
        await api.drain(1)
        await rounds_until(api, failed_id, final)
        cancelled_id = await generate(api, receiver.url, seed=78)
        answer = await api.client.post(f"/api/v1/images/{cancelled_id}/cancel", headers=api.ana)
        assert answer.status_code == 200
        await rounds_until(api, cancelled_id, final)

    # without CAVERNA_WEBHOOK_SECRET the key is derived from the runtime's signing secret
    key = webhook_secret(api.runtime.settings)
    for headers, body in receiver.received:
        verify(key, headers["Caverna-Signature"], body)
    failed, cancelled = receiver.payloads()
    assert failed["event"] == "image.failed"
    assert failed["image_id"] == failed_id
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_request"
    assert "prompt refused" in failed["error"]["message"]
    assert receiver.received[0][0]["Caverna-Event"] == "image.failed"
    assert cancelled["event"] == "image.cancelled"
    assert (cancelled["image_id"], cancelled["error"]) == (cancelled_id, None)


@pytest.mark.parametrize("api", [LOCAL], indirect=True)
async def test_server_errors_are_retried_with_backoff_until_delivered(api: Api) -> None:
    async with Receiver(statuses=[500, 503]) as receiver:
        image_id = await generate(api, receiver.url)
        await api.drain(1)
        before = api.runtime.clock()
        first = await rounds_until(api, image_id, lambda s: s.attempts == 1)
        assert first.status == "pending"
        assert first.error == "the receiver answered HTTP 500"
        assert first.next_at is not None
        assert first.next_at > before  # the retry waits
        done = await rounds_until(api, image_id, final)

    assert (done.status, done.attempts, done.error) == ("delivered", 3, None)
    assert len(receiver.received) == 3
    deliveries = {headers["Caverna-Delivery"] for headers, _ in receiver.received}
    assert len(deliveries) == 1  # one delivery id across attempts, for deduplication
    for headers, body in receiver.received:
        verify(SECRET.encode(), headers["Caverna-Signature"], body)


@pytest.mark.parametrize("api", [{**LOCAL, "webhook_max_attempts": 3}], indirect=True)
async def test_an_unreachable_receiver_fails_after_the_last_attempt(api: Api) -> None:
    image_id = await generate(api, f"http://127.0.0.1:{closed_port()}/hook")
    await api.drain(1)
    done = await rounds_until(api, image_id, final)
    assert (done.status, done.attempts) == ("failed", 3)
    assert done.error is not None
    assert "could not connect" in done.error
    assert "after 3 attempts" in done.error
    assert await api.runtime.webhooks.run_once() == 0


@pytest.mark.parametrize("api", [{"webhook_allowed_hosts": "localhost"}], indirect=True)
async def test_a_name_resolving_to_loopback_is_refused_at_delivery(api: Api) -> None:
    async with Receiver() as receiver:
        port = receiver.base_url.rsplit(":", 1)[1]
        # https and an allowlisted name: accepted at submit, where nothing is resolved
        image_id = await generate(api, f"https://localhost:{port}/hook")
        await api.drain(1)
        done = await rounds_until(api, image_id, final)
    assert done.status == "failed"
    assert done.attempts == 1  # a refusal is not retried
    assert done.error is not None
    assert "localhost resolves to" in done.error
    assert "loopback" in done.error
    assert receiver.received == []


REFUSED = [
    ("http://hooks.example.com/h", "scheme", ["https"]),
    ("https://elsewhere.example.org/h", "allowlist", None),
    ("https://user:pass@hooks.example.com/h", "user name", None),
    ("https://hooks.example.com@evil.example.org/h", "user name", None),
    ("https://10.0.0.1/h", "private", None),
    ("https://169.254.169.254/latest/meta-data/", "link-local", None),
    ("https://[::1]:8443/h", "loopback", None),
    ("https://hooks.example.com/" + "a" * 2000, "longer than 2000", None),
    ("https://hooks.example.com\\@evil.example.org/h", "characters", None),
    ("hooks.example.com/h", "scheme", ["https"]),
]


@pytest.mark.parametrize("api", [PUBLIC_ONLY], indirect=True)
@pytest.mark.parametrize(
    ("url", "reason", "allowed"),
    REFUSED,
    ids=[
        "http",
        "not-listed",
        "userinfo",
        "userinfo-confusion",
        "private-literal",
        "metadata-address",
        "ipv6-loopback",
        "too-long",
        "backslash",
        "no-scheme",
    ],
)
async def test_bad_callback_urls_are_refused_and_queue_nothing(
    api: Api, url: str, reason: str, allowed: list[str] | None
) -> None:
    answer = await api.client.post(
        "/api/v1/images/generate", json={**FRAME, "callback_url": url}, headers=api.ana
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == "invalid_callback_url"
    [error] = problem["errors"]
    assert (error["code"], error["field"]) == ("invalid_callback_url", "callback_url")
    assert reason in error["message"]
    if allowed is not None:
        assert error["allowed"] == allowed
    if reason == "allowlist":
        assert error["allowed"] == ["hooks.example.com", "10.0.0.1", "169.254.169.254", "::1"]
    assert await api.runtime.jobs.counts() == {}


@pytest.mark.parametrize("api", [PUBLIC_ONLY], indirect=True)
async def test_sequences_check_the_callback_url_too(api: Api) -> None:
    refused = await api.client.post(
        "/api/v1/sequences/generate",
        json={"sequence": "onboarding", "callback_url": "https://10.0.0.1/h"},
        headers=api.ana,
    )
    assert refused.status_code == 422
    assert refused.json()["code"] == "invalid_callback_url"
    assert await api.runtime.jobs.counts() == {}

    accepted = await api.client.post(
        "/api/v1/images/generate",
        json={**FRAME, "callback_url": "https://hooks.example.com/h"},
        headers=api.ana,
    )
    assert accepted.status_code == 202


async def test_without_an_allowlist_callback_urls_are_refused(api: Api) -> None:
    answer = await api.client.post(
        "/api/v1/images/generate",
        json={**FRAME, "callback_url": "https://hooks.example.com/h"},
        headers=api.ana,
    )
    assert answer.status_code == 422
    assert "not enabled" in answer.json()["errors"][0]["message"]
    assert await api.runtime.jobs.counts() == {}


@pytest.mark.parametrize("api", [LOCAL], indirect=True)
async def test_a_sequence_sends_one_webhook_per_image(api: Api) -> None:
    async with Receiver() as receiver:
        answer = await api.client.post(
            "/api/v1/sequences/generate",
            json={"sequence": "onboarding", "seed": 5, "callback_url": receiver.url},
            headers=api.ana,
        )
        assert answer.status_code == 202, answer.text
        body = answer.json()
        image_ids = [str(image_id) for image_id in body["image_ids"]]
        await api.drain(len(image_ids))
        for image_id in image_ids:
            assert (await rounds_until(api, image_id, final)).status == "delivered"

    payloads = receiver.payloads()
    assert sorted(p["image_id"] for p in payloads) == sorted(image_ids)
    assert {p["sequence_id"] for p in payloads} == {body["sequence_id"]}
    assert {p["event"] for p in payloads} == {"image.completed"}


@pytest.mark.parametrize("api", [LOCAL], indirect=True)
async def test_a_reused_image_takes_the_webhook_of_the_request_that_reuses_it(api: Api) -> None:
    async with Receiver() as receiver:
        first = await api.generate(api.ana, **FRAME)
        await api.drain(1)
        answer = await api.client.post(
            "/api/v1/images/generate",
            json={**FRAME, "callback_url": receiver.url},
            headers=api.ana,
        )
        assert answer.json()["reused"] is True
        assert answer.json()["image_id"] == first
        assert (await rounds_until(api, first, final)).status == "delivered"

        # a third request naming another receiver gets an image of its own to hear about
        other = await api.client.post(
            "/api/v1/images/generate",
            json={**FRAME, "callback_url": receiver.url + "?second"},
            headers=api.ana,
        )
        assert other.json()["reused"] is False
    assert [p["image_id"] for p in receiver.payloads()] == [first]
