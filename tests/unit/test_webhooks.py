"""Webhook building blocks: the signature, the address checks, the allowlist, the resolver that
vets what it resolves, the sender's refusal of address literals, and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import ValidationError

from caverna.config import Settings
from caverna.domain.problems import InvalidCallbackUrl
from caverna.services.webhooks import (
    CallbackPolicy,
    DueWebhook,
    WebhookDispatcher,
    WebhookOptions,
    WebhookRefused,
    WebhookState,
    address_refusal,
    delivery_id,
    parse_allowed_hosts,
    signature,
)
from caverna.webhooks_http import AddressRefused, HttpWebhookSender, VettingResolver


def test_the_signature_is_an_hmac_of_the_timestamp_and_the_body() -> None:
    body = b'{"event":"image.completed"}'
    header = signature(b"k" * 32, 1_700_000_000, body)
    expected = hmac.new(b"k" * 32, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    # any change of key, time or body gives another signature
    assert signature(b"j" * 32, 1_700_000_000, body) != header
    assert signature(b"k" * 32, 1_700_000_001, body) != header
    assert signature(b"k" * 32, 1_700_000_000, body + b" ") != header


def test_a_delivery_id_is_stable_across_attempts_and_distinct_between_webhooks() -> None:
    image = uuid.uuid4()
    same = delivery_id(image, "image.completed", "https://a.example/h")
    assert same == delivery_id(image, "image.completed", "https://a.example/h")
    assert same != delivery_id(image, "image.completed", "https://b.example/h")
    assert same != delivery_id(uuid.uuid4(), "image.completed", "https://a.example/h")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not a globally routable"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:8.8.8.8", None),
        ("2002:a00:1::1", "private"),  # 6to4 around 10.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 around 127.0.0.1
        ("fec0::1", "site-local"),
    ],
)
def test_only_public_addresses_may_receive_webhooks(address: str, reason: str | None) -> None:
    refusal = address_refusal(ipaddress.ip_address(address))
    if reason is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert reason in refusal


def test_the_allowlist_is_normalised_and_bad_entries_are_named() -> None:
    assert parse_allowed_hosts(" Hooks.Example.com., *.example.net ,[::1], 10.0.0.1,,") == (
        "hooks.example.com",
        "*.example.net",
        "::1",
        "10.0.0.1",
    )
    assert parse_allowed_hosts("") == ()
    for bad in ("*", "exa mple.com", "http://x.example", "127.1", "a..b", "*.*.example.com"):
        with pytest.raises(ValueError, match="is not a host name"):
            parse_allowed_hosts(f"ok.example,{bad}")
    with pytest.raises(ValidationError, match="webhook_allowed_hosts"):
        Settings(webhook_allowed_hosts="hooks.example.com,not a host")


def test_a_wildcard_covers_subdomains_only() -> None:
    policy = CallbackPolicy.from_setting("*.example.com,exact.example.org")
    assert policy.host_allowed("a.example.com")
    assert policy.host_allowed("a.b.example.com")
    assert policy.host_allowed("A.Example.COM.")
    assert not policy.host_allowed("example.com")
    assert not policy.host_allowed("evilexample.com")
    assert not policy.host_allowed("example.com.evil.org")
    assert policy.host_allowed("exact.example.org")
    assert not policy.host_allowed("sub.exact.example.org")


def _message(policy: CallbackPolicy, url: str) -> str:
    with pytest.raises(InvalidCallbackUrl) as caught:
        policy.check(url)
    [problem] = caught.value.problems
    assert (problem.code.value, problem.field) == ("invalid_callback_url", "callback_url")
    return problem.message


def test_the_submit_time_check() -> None:
    public = CallbackPolicy.from_setting("hooks.example.com,[2001:db8::1],8.8.8.8")
    public.check("https://hooks.example.com/h?x=1")
    public.check("https://hooks.example.com:8443/h")
    public.check("https://8.8.8.8/h")
    assert "scheme" in _message(public, "http://hooks.example.com/h")
    assert "scheme" in _message(public, "ftp://hooks.example.com/h")
    assert "no host" in _message(public, "https:///h")
    assert "not a valid URL" in _message(public, "https://hooks.example.com:99999/h")
    assert "port 0" in _message(public, "https://hooks.example.com:0/h")
    assert "canonical IP" in _message(public, "https://2130706433/h")
    assert "canonical IP" in _message(public, "https://0x7f.1/h")
    assert "characters" in _message(public, "https://hooks.example.com/a b")
    assert "characters" in _message(public, "https://hóoks.example.com/h")
    # documentation addresses are not public, even when listed
    assert "private" in _message(public, "https://[2001:db8::1]/h")

    local = CallbackPolicy.from_setting("127.0.0.1,localhost", allow_private=True)
    local.check("http://127.0.0.1:8080/h")
    local.check("https://localhost/h")
    assert "allowlist" in _message(local, "http://10.0.0.1/h")  # private allowed, not listed

    assert "not enabled" in _message(CallbackPolicy(), "https://hooks.example.com/h")


class StaticResolver(AbstractResolver):
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)
            for address in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_the_resolver_refuses_a_name_with_any_non_public_address() -> None:
    public = VettingResolver(allow_private=False, inner=StaticResolver(["8.8.8.8", "1.1.1.1"]))
    assert [r["host"] for r in await public.resolve("hooks.example.com", 443)] == [
        "8.8.8.8",
        "1.1.1.1",
    ]
    # one bad address among good ones is enough: the connector could pick any of them
    mixed = VettingResolver(allow_private=False, inner=StaticResolver(["8.8.8.8", "10.0.0.7"]))
    with pytest.raises(AddressRefused, match=r"resolves to 10\.0\.0\.7, a private address"):
        await mixed.resolve("rebind.example.com", 443)
    allowed = VettingResolver(allow_private=True, inner=StaticResolver(["127.0.0.1"]))
    assert [r["host"] for r in await allowed.resolve("localhost", 80)] == ["127.0.0.1"]
    await allowed.close()


async def test_the_sender_refuses_a_private_address_literal_without_connecting() -> None:
    sender = HttpWebhookSender(timeout_seconds=1.0, allow_private=False)
    try:
        with pytest.raises(WebhookRefused, match="link-local"):
            await sender.send("https://169.254.169.254/latest", b"{}", {})
        with pytest.raises(WebhookRefused, match="loopback"):
            await sender.send("https://[::ffff:127.0.0.1]:8443/h", b"{}", {})
    finally:
        await sender.aclose()


class RecordingStore:
    """Hands out the given webhooks once and records each outcome."""

    def __init__(self, *due: DueWebhook) -> None:
        self.due = list(due)
        self.outcomes: list[tuple[uuid.UUID, int, str, str | None, datetime | None]] = []

    async def attach(self, image_id: uuid.UUID, url: str, now: datetime) -> bool:
        return False

    async def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[DueWebhook]:
        due, self.due = self.due[:limit], self.due[limit:]
        return due

    async def settle(
        self,
        image_id: uuid.UUID,
        attempt: int,
        *,
        status: str,
        error: str | None,
        next_at: datetime | None,
    ) -> bool:
        self.outcomes.append((image_id, attempt, status, error, next_at))
        return True

    async def get(self, image_id: uuid.UUID) -> WebhookState | None:
        return None


class RecordingSender:
    def __init__(self, answer: int | Exception = 200) -> None:
        self.answer = answer
        self.sent: list[tuple[str, bytes, Mapping[str, str]]] = []

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.sent.append((url, body, headers))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def aclose(self) -> None:
        return None


CLOCK = datetime(2030, 1, 1, tzinfo=UTC)


def due(job_status: str = "completed", *, attempt: int = 1, url: str = "") -> DueWebhook:
    return DueWebhook(
        image_id=uuid.uuid4(),
        url=url or "https://hooks.example.com/h",
        job_status=job_status,
        attempt=attempt,
        error_code=None,
        error_message=None,
        sequence_id=None,
        frame_id=None,
    )


def _dispatcher(
    jitter: float = 0.0,
    store: RecordingStore | None = None,
    sender: RecordingSender | None = None,
) -> WebhookDispatcher:
    return WebhookDispatcher(
        store=store or RecordingStore(),
        sender=sender or RecordingSender(),
        policy=CallbackPolicy.from_setting("hooks.example.com"),
        secret=b"s" * 32,
        clock=lambda: CLOCK,
        options=WebhookOptions(backoff_seconds=5.0, max_backoff_seconds=3600.0, max_attempts=3),
        jitter=lambda: jitter,
    )


async def test_what_the_dispatcher_does_with_each_outcome() -> None:
    delivered = due()
    moved = due(url="https://moved.example.org/h")  # allowed once, no longer on the allowlist
    deleted = due("deleted")
    store = RecordingStore(delivered, moved, deleted)
    sender = RecordingSender(200)
    assert await _dispatcher(store=store, sender=sender).run_once() == 3
    outcomes = {image_id: (status, error) for image_id, _, status, error, _ in store.outcomes}
    assert outcomes[delivered.image_id] == ("delivered", None)
    status, error = outcomes[moved.image_id]
    assert status == "failed"
    assert error is not None
    assert "allowlist" in error
    assert outcomes[deleted.image_id][0] == "skipped"
    assert [url for url, _, _ in sender.sent] == [delivered.url]  # nothing else was sent

    # a sender that breaks unexpectedly still uses up an attempt, then the webhook is given up
    broken = RecordingSender(RuntimeError("bug"))
    first, last = due(), due(attempt=3)
    store = RecordingStore(first, last)
    await _dispatcher(store=store, sender=broken).run_once()
    outcome = {image_id: (status, error, at) for image_id, _, status, error, at in store.outcomes}
    retry_at = CLOCK + timedelta(seconds=5)
    assert outcome[first.image_id] == ("pending", "RuntimeError: bug", retry_at)
    assert outcome[last.image_id] == ("failed", "RuntimeError: bug (after 3 attempts)", None)


def test_retries_back_off_exponentially_up_to_an_hour_with_jitter() -> None:
    exact = _dispatcher(0.0)
    assert [exact.backoff(n) for n in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0]
    assert exact.backoff(11) == 3600.0
    assert exact.backoff(40) == 3600.0
    earliest = _dispatcher(1.0)
    assert earliest.backoff(1) == pytest.approx(4.0)
    assert earliest.backoff(40) == pytest.approx(2880.0)


def test_the_payload_of_a_failed_image() -> None:
    item = DueWebhook(
        image_id=uuid.UUID(int=1),
        url="https://hooks.example.com/h",
        job_status="failed",
        attempt=1,
        error_code="provider_error",
        error_message="the provider is down",
        sequence_id=None,
        frame_id="onboarding/training",
    )
    body = _dispatcher(0.0).body(item, datetime(2030, 1, 1, 12, tzinfo=UTC))
    assert body == (
        b'{"event":"image.failed","image_id":"00000000-0000-0000-0000-000000000001",'
        b'"status":"failed","url":"/api/v1/images/00000000-0000-0000-0000-000000000001/status",'
        b'"error":{"code":"provider_error","message":"the provider is down"},'
        b'"sequence_id":null,"frame_id":"onboarding/training",'
        b'"delivered_at":"2030-01-01T12:00:00Z"}'
    )
