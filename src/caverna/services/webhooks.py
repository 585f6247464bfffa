"""Completion webhooks: who may receive them, how they are signed, and delivery with retries.

A job with a callback URL carries its webhook on its own row: `pending` until the job is final
and the receiver has answered 2xx (`delivered`), or until the attempts run out (`failed`). Any
process running workers claims due webhooks with one conditional UPDATE that also pushes their
next attempt a lease away, so two processes never send the same webhook at the same time and
one that dies mid-send only delays it. The attempt number a claim took is the fencing token of
the write that records the outcome: a runner whose lease ran out cannot overwrite a newer one.

Callback URLs are checked twice. At submit (scheme, no credentials, a host on the allowlist, no
private address literal), so a bad URL is refused before anything is queued. And at delivery,
by the sender, against every address the host resolves to, connecting only to those: a name
that was public when the job was submitted may point at an internal address by the time the
job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from caverna.domain.jobs import JobStatus
from caverna.domain.problems import InvalidCallbackUrl, Problem, ProblemCode

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2000
FIELD = "callback_url"

# webhook_status values of an image row
PENDING = "pending"  # to send once the job is final (also between retries)
DELIVERED = "delivered"
FAILED = "failed"  # attempts exhausted, or the destination was refused
SKIPPED = "skipped"  # the image was deleted before its webhook went out

EVENTS: Mapping[str, str] = {
    JobStatus.COMPLETED.value: "image.completed",
    JobStatus.FAILED.value: "image.failed",
    JobStatus.CANCELLED.value: "image.cancelled",
}
# job statuses whose pending webhooks are claimed: the events above, and deleted (skipped)
CLAIMABLE: tuple[str, ...] = (*EVENTS, JobStatus.DELETED.value)

SIGNATURE_HEADER = "Caverna-Signature"
EVENT_HEADER = "Caverna-Event"
DELIVERY_HEADER = "Caverna-Delivery"
_DELIVERY_NAMESPACE = uuid.UUID("0b9f6c3e-5a4d-4a59-9c1e-6f1f3f2b8d71")

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
# hosts that socket libraries read as IPv4 in legacy forms (2130706433, 127.1, 0x7f.0.0.1)
_NUMERIC_HOST = re.compile(r"[0-9.]+|0x[0-9a-fx.]*")
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


# -- addresses -------------------------------------------------------------------------------


def address_refusal(address: IPAddress) -> str | None:
    """Why an address may not receive webhooks, or None when it is a public one.

    An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo, NAT64) is judged by the
    IPv4 address too: connecting to it reaches that address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_refusal(address.ipv4_mapped)
        for embedded in _embedded_ipv4(address):
            reason = address_refusal(embedded)
            if reason is not None:
                return reason
    flags = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
    )
    for name, flagged in flags:
        if flagged:
            return f"a {name} address"
    if not address.is_global:
        return "not a globally routable address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    embedded: list[ipaddress.IPv4Address] = []
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)
    if address in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return embedded


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def ip_literal(host: str) -> IPAddress | None:
    """The address a host names literally (brackets and a zone allowed), else None."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


# -- the allowlist and the submit-time check --------------------------------------------------


def parse_allowed_hosts(value: str) -> tuple[str, ...]:
    """The allowlist setting as normalised patterns; a ValueError names the first bad entry."""
    patterns: list[str] = []
    for raw in value.split(","):
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        literal = ip_literal(entry)
        if literal is not None:
            patterns.append(str(literal))
            continue
        name = entry.removeprefix("*.")
        if not _HOSTNAME.fullmatch(name) or _NUMERIC_HOST.fullmatch(name):
            raise ValueError(
                f"'{raw.strip()}' is not a host name, an IP address or a '*.domain' pattern"
            )
        patterns.append(entry)
    return tuple(patterns)


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """Where webhooks may go: hosts on the allowlist, and public addresses unless told otherwise.

    `allow_private` is for receivers on the same machine or network (tests, local demos): it
    lifts the address checks and allows plain http, but never the allowlist.
    """

    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False

    @classmethod
    def from_setting(cls, hosts: str, *, allow_private: bool = False) -> CallbackPolicy:
        return cls(parse_allowed_hosts(hosts), allow_private)

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.allow_private else ("https",)

    def host_allowed(self, host: str) -> bool:
        literal = ip_literal(host)
        name = str(literal) if literal is not None else host.lower().rstrip(".")
        for pattern in self.allowed_hosts:
            if name == pattern:
                return True
            if literal is None and pattern.startswith("*.") and name.endswith(pattern[1:]):
                return True
        return False

    def check(self, url: str) -> None:
        """Raise InvalidCallbackUrl, with the reason and allowed values, unless `url` is fine."""
        refusal = self._refusal(url)
        if refusal is not None:
            message, allowed = refusal
            problem = Problem(ProblemCode.INVALID_CALLBACK_URL, FIELD, message, allowed=allowed)
            raise InvalidCallbackUrl((problem,), "the callback URL was rejected")

    def _refusal(self, url: str) -> tuple[str, tuple[str, ...]] | None:
        if len(url) > MAX_URL_LENGTH:
            return f"the URL is longer than {MAX_URL_LENGTH} characters", ()
        if not _URL_CHARACTERS.fullmatch(url):
            # what RFC 3986 allows, and nothing two URL parsers could read differently
            return "the URL has characters a URL may not contain (encode them with %XX)", ()
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            return f"not a valid URL: {exc}", ()
        if parts.scheme not in self.schemes:
            return f"the scheme must be {' or '.join(self.schemes)}", self.schemes
        if "@" in parts.netloc:
            return "the URL must not carry a user name or password", ()
        host = (parts.hostname or "").rstrip(".")
        if not host:
            return "the URL has no host", ()
        if port == 0:
            return "port 0 is not a port a receiver listens on", ()
        if not self.allowed_hosts:
            return "webhooks are not enabled on this server (no host is allowed)", ()
        literal = ip_literal(host)
        if literal is None and _NUMERIC_HOST.fullmatch(host):
            return f"'{host}' is neither a host name nor a canonical IP address", ()
        if literal is not None and not self.allow_private:
            reason = address_refusal(literal)
            if reason is not None:
                return f"{literal} is {reason}: webhooks go to public addresses only", ()
        if not self.host_allowed(host):
            return f"the host '{host}' is not on the webhook allowlist", self.allowed_hosts
        return None


# -- signing ----------------------------------------------------------------------------------


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The Caverna-Signature header: the timestamp is signed with the body, so a captured
    request cannot be replayed later with a fresh timestamp."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def delivery_id(image_id: uuid.UUID, event: str, url: str) -> uuid.UUID:
    """The same for every attempt of one webhook, so receivers can drop repeats."""
    return uuid.uuid5(_DELIVERY_NAMESPACE, f"{image_id}\n{event}\n{url}")


# -- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueWebhook:
    """A claimed webhook: where it goes, and what the final job looks like."""

    image_id: uuid.UUID
    url: str
    job_status: str
    attempt: int  # this attempt's number, 1 for the first
    error_code: str | None
    error_message: str | None
    sequence_id: uuid.UUID | None
    frame_id: str | None


@dataclass(frozen=True, slots=True)
class WebhookState:
    url: str | None
    status: str | None
    attempts: int
    next_at: datetime | None
    error: str | None


class WebhookStore(Protocol):
    async def attach(self, image_id: uuid.UUID, url: str, now: datetime) -> bool:
        """Give an existing image this webhook unless it has another; True if it now has it."""

    async def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[DueWebhook]:
        """Due webhooks of final jobs, each with its attempt count raised and its next attempt
        moved to `lease_until`, atomically."""

    async def settle(
        self,
        image_id: uuid.UUID,
        attempt: int,
        *,
        status: str,
        error: str | None,
        next_at: datetime | None,
    ) -> bool:
        """Record an attempt's outcome, only if no later claim took the webhook meanwhile."""

    async def get(self, image_id: uuid.UUID) -> WebhookState | None: ...


class Callbacks(Protocol):
    """What submitting a job needs from webhooks (the dispatcher provides it)."""

    def check(self, url: str) -> None:
        """Raise InvalidCallbackUrl unless webhooks may go to `url`."""

    async def attach(self, image_id: uuid.UUID, url: str) -> bool:
        """Give an existing image this webhook unless it has another; True if it now has it."""


class WebhookRefused(Exception):
    """The destination may not receive webhooks (an address it resolves to is private, ...)."""


class DeliveryError(Exception):
    """No answer: the receiver could not be reached, or did not answer in time."""


class WebhookSender(Protocol):
    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST `body` once, without following redirects, and return the answer's status.

        Raises WebhookRefused when the destination's addresses are not allowed, DeliveryError
        when there is no answer.
        """

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    max_attempts: int = 8
    backoff_seconds: float = 5.0
    max_backoff_seconds: float = 3600.0
    # a claimed webhook is not claimed again before this, even if its sender vanished
    lease_seconds: float = 60.0
    poll_seconds: float = 1.0
    batch: int = 16
    status_path: str = "/api/v1/images/{image_id}/status"


class WebhookDispatcher:
    def __init__(
        self,
        *,
        store: WebhookStore,
        sender: WebhookSender,
        policy: CallbackPolicy,
        secret: bytes,
        clock: Callable[[], datetime],
        options: WebhookOptions = WebhookOptions(),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.sender = sender
        self.policy = policy
        self.secret = secret
        self.clock = clock
        self.options = options
        self.jitter = jitter

    # -- what submitting needs -------------------------------------------------------------------

    def check(self, url: str) -> None:
        self.policy.check(url)

    async def attach(self, image_id: uuid.UUID, url: str) -> bool:
        return await self.store.attach(image_id, url, self.clock())

    async def state(self, image_id: uuid.UUID) -> WebhookState | None:
        return await self.store.get(image_id)

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Send due webhooks until `stop` is set; webhooks being sent then are finished."""
        while not stop.is_set():
            try:
                sent = await self.run_once()
            except Exception:  # the database may be briefly away; the next round tries again
                log.exception("webhook round failed")
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.poll_seconds)

    async def run_once(self) -> int:
        """Claim the due webhooks (one batch) and attempt each; returns how many."""
        now = self.clock()
        lease_until = now + timedelta(seconds=self.options.lease_seconds)
        due = await self.store.claim(now, lease_until, self.options.batch)
        if due:
            await asyncio.gather(*(self._attempt(item) for item in due))
        return len(due)

    def backoff(self, attempt: int) -> float:
        """Seconds before the attempt after `attempt`: doubling, capped, up to a fifth shorter
        at random so receivers that come back are not hit by every retry at once."""
        options = self.options
        delay = min(options.max_backoff_seconds, options.backoff_seconds * 2.0 ** (attempt - 1))
        return delay * (1.0 - 0.2 * self.jitter())

    def body(self, item: DueWebhook, now: datetime) -> bytes:
        error = None
        if item.job_status == JobStatus.FAILED.value:
            error = {"code": item.error_code or "", "message": item.error_message or ""}
        payload: dict[str, Any] = {
            "event": EVENTS[item.job_status],
            "image_id": str(item.image_id),
            "status": item.job_status,
            "url": self.options.status_path.format(image_id=item.image_id),
            "error": error,
            "sequence_id": str(item.sequence_id) if item.sequence_id is not None else None,
            "frame_id": item.frame_id,
            "delivered_at": now.isoformat().replace("+00:00", "Z"),
        }
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    async def _attempt(self, item: DueWebhook) -> None:
        try:
            await self._deliver(item)
        except Exception:  # one webhook's bug must not stop the others; its lease runs out
            log.exception("webhook for image %s failed unexpectedly", item.image_id)

    async def _deliver(self, item: DueWebhook) -> None:
        if item.job_status not in EVENTS:
            await self._settle(item, SKIPPED, "the image was deleted before its webhook was sent")
            return
        try:
            self.policy.check(item.url)  # the allowlist may have changed since submit
        except InvalidCallbackUrl as exc:
            await self._settle(item, FAILED, f"refused: {exc.problems[0].message}")
            return
        now = self.clock()
        event = EVENTS[item.job_status]
        body = self.body(item, now)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.secret, int(now.timestamp()), body),
            EVENT_HEADER: event,
            DELIVERY_HEADER: str(delivery_id(item.image_id, event, item.url)),
        }
        try:
            status = await self.sender.send(item.url, body, headers)
        except WebhookRefused as exc:
            await self._settle(item, FAILED, f"refused: {exc}")
            return
        except DeliveryError as exc:
            error = str(exc) or type(exc).__name__
        except Exception as exc:  # still an attempt: otherwise it would be retried forever
            log.exception("webhook sender failed for image %s", item.image_id)
            error = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= status < 300:
                await self._settle(item, DELIVERED, None)
                log.info("webhook delivered", extra={"image_id": str(item.image_id)})
                return
            error = f"the receiver answered HTTP {status}"
        if item.attempt >= self.options.max_attempts:
            await self._settle(item, FAILED, f"{error} (after {item.attempt} attempts)")
            return
        at = self.clock() + timedelta(seconds=self.backoff(item.attempt))
        await self._settle(item, PENDING, error, next_at=at)

    async def _settle(
        self, item: DueWebhook, status: str, error: str | None, next_at: datetime | None = None
    ) -> None:
        if status in (FAILED, SKIPPED):
            log.warning("webhook for image %s %s: %s", item.image_id, status, error)
        settled = await self.store.settle(
            item.image_id, item.attempt, status=status, error=error, next_at=next_at
        )
        if not settled:
            log.info("webhook for image %s was taken over by another runner", item.image_id)

    async def aclose(self) -> None:
        await self.sender.aclose()
