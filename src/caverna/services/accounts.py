"""Users, API keys, quotas and the audit trail.

A key's secret is shown once and never stored: the database keeps a sha256 of it, and a request
is authenticated by looking that hash up through a unique index. Nothing compares secrets byte
by byte in Python, so response times say nothing about how close a guess was; sha256 (not a
slow password hash) is enough because tokens carry 256 random bits, not a human's password.

Authentication runs on every request, so it writes only when it must: last_used_at moves at
most once a minute per key, and malformed tokens are refused before any database work. It reads
only when it must too: a key found live is remembered for a few seconds (KEY_CACHE_SECONDS), so a
client polling hundreds of times a second costs one lookup per interval instead of one per
request. Revoking a key or disabling a user forgets it at once in the process that made the
change; other processes (API replicas, `serve --processes`) notice within KEY_CACHE_SECONDS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from caverna.domain.accounts import (
    AuditAction,
    AuditEntry,
    KeyInfo,
    NewKey,
    Principal,
    Role,
    UserInfo,
    check_key_name,
    check_user_id,
    parse_action,
    parse_role,
)
from caverna.domain.problems import (
    InvalidParametersError,
    NotFound,
    Problem,
    ProblemCode,
    raise_if_any,
)
from caverna.services.passwords import (
    hash_password,
    needs_rehash,
    password_problem,
    verify_password,
)

TOKEN_PREFIX = "cav_"
TOKEN_BYTES = 32
DISPLAY_PREFIX_CHARS = 4
FIRST_ADMIN_ID = "admin"
TOUCH_EVERY = timedelta(minutes=1)
# token_urlsafe(32) gives 43 characters; a little slack lets the length change without
# locking out keys already issued
_TOKEN = re.compile(r"cav_[A-Za-z0-9_-]{32,128}")
MAX_DAILY_IMAGES = 2_147_483_647  # the column is a 32-bit integer on PostgreSQL
MAX_MONTHLY_USD = 1_000_000_000.0
AUDIT_PAGE_DEFAULT = 50
AUDIT_PAGE_MAX = 200
AUDIT_ACTOR_MAX = 64
AUDIT_TARGET_MAX = 128
_REMEMBERED_TOUCHES = 10_000
# how long another process may still accept a key after it was revoked (or its user disabled)
KEY_CACHE_SECONDS = 5.0
_REMEMBERED_KEYS = 10_000


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def display_prefix(token: str) -> str:
    """Enough of the token to tell keys apart in a list, far too little to guess the rest."""
    return token[: len(TOKEN_PREFIX) + DISPLAY_PREFIX_CHARS]


class AccountStore(Protocol):
    async def add_key(self, user: UserInfo, key: KeyInfo, key_hash: str) -> bool:
        """Insert the key, and its user unless the user exists, in one transaction.

        True when this call created the user (two concurrent calls cannot both create it).
        """

    async def add_first_admin(self, user: UserInfo, key: KeyInfo, key_hash: str) -> bool:
        """Insert the user and key only while there is no user at all; False otherwise."""

    async def find_key(self, key_hash: str) -> tuple[KeyInfo, UserInfo, str] | None:
        """The key with this hash, its user and the stored hash, or None."""

    async def touch_key(self, key_id: uuid.UUID, now: datetime, stale_before: datetime) -> None:
        """Set last_used_at to now unless it is already at or after stale_before."""

    async def revoke_key(self, key_id: uuid.UUID, now: datetime) -> tuple[KeyInfo, bool] | None:
        """Revoke the key unless it already is; the key and whether this call revoked it."""

    async def get_user(self, user_id: str) -> UserInfo | None: ...

    async def list_users(self) -> list[UserInfo]:
        """Every user, by id."""

    async def list_keys(self, user_id: str | None) -> list[KeyInfo]:
        """Keys (of one user, or of everyone), oldest first."""

    async def set_quota(
        self, user_id: str, daily_images: int | None, monthly_usd: float | None
    ) -> tuple[UserInfo, UserInfo] | None:
        """The user before and after the change, or None when there is no such user."""

    async def set_disabled(
        self, user_id: str, disabled: bool, now: datetime
    ) -> tuple[UserInfo, UserInfo] | None:
        """Disable (keeping the first disabled_at) or enable; the user before and after."""

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> bool:
        """Store (or clear) a user's password hash; False when the user does not exist."""

    async def password_hash(self, user_id: str) -> tuple[UserInfo, str | None] | None:
        """The user and their password hash, for a login."""


class AuditStore(Protocol):
    async def append(
        self,
        at: datetime,
        actor: str,
        action: AuditAction,
        target: str | None,
        details: dict[str, Any],
    ) -> int:
        """Store one entry; its id."""

    async def query(
        self,
        *,
        action: AuditAction | None,
        actor: str | None,
        target: str | None,
        since: datetime | None,
        until: datetime | None,
        before: tuple[datetime, int] | None,
        limit: int,
    ) -> list[AuditEntry]:
        """Entries newest first (by at, then id), strictly older than `before` when given."""


Clock = Callable[[], datetime]
Monotonic = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _LiveKey:
    """A key verified live, with its caller, until a monotonic time."""

    key: KeyInfo
    principal: Principal
    until: float


class AuditLog:
    """Who did what to what, and when: append-only, queried newest first."""

    def __init__(self, store: AuditStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def record(
        self, actor: str, action: AuditAction, target: str | None = None, **details: Any
    ) -> AuditEntry:
        """Store an event; details are made JSON-safe (ids and times become strings).

        Actor and target are cut to their column sizes: an audit write must never be the thing
        that fails a request that already happened.
        """
        at = self._clock()
        safe = _json_safe(details)
        actor = actor[:AUDIT_ACTOR_MAX]
        target = target[:AUDIT_TARGET_MAX] if target is not None else None
        entry_id = await self._store.append(at, actor, AuditAction(action), target, safe)
        return AuditEntry(entry_id, at, actor, AuditAction(action), target, safe)

    async def query(
        self,
        *,
        action: AuditAction | str | None = None,
        actor: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = AUDIT_PAGE_DEFAULT,
    ) -> tuple[list[AuditEntry], str | None]:
        """One page, newest first, and the cursor of the next page (None on the last page).

        Pages are keyed on (at, id), not offsets, so entries written while someone pages
        through neither repeat nor go missing. `since` is inclusive, `until` exclusive.
        """
        problems: list[Problem] = []
        wanted: AuditAction | None = None
        if action is not None:
            try:
                wanted = parse_action(str(action))
            except InvalidParametersError as exc:
                problems.extend(exc.problems)
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                problems.append(
                    Problem(ProblemCode.INVALID_TYPE, name, "a time needs a time zone, e.g. Z")
                )
        if (
            since is not None
            and until is not None
            and since.tzinfo is not None
            and until.tzinfo is not None
            and since >= until
        ):
            problems.append(Problem(ProblemCode.OUT_OF_RANGE, "until", "must be after since"))
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            problems.append(
                Problem(
                    ProblemCode.OUT_OF_RANGE,
                    "limit",
                    f"a whole number from 1 (at most {AUDIT_PAGE_MAX} are returned)",
                )
            )
        before: tuple[datetime, int] | None = None
        if cursor is not None:
            before = decode_cursor(cursor)
            if before is None:
                problems.append(
                    Problem(
                        ProblemCode.INVALID_CURSOR,
                        "cursor",
                        "not a cursor from a previous page; start again without it",
                    )
                )
        raise_if_any(problems, InvalidParametersError, "invalid audit query")
        size = min(limit, AUDIT_PAGE_MAX)
        rows = await self._store.query(
            action=wanted,
            actor=actor,
            target=target,
            since=since,
            until=until,
            before=before,
            limit=size + 1,
        )
        page = rows[:size]
        more = len(rows) > size
        return page, (encode_cursor(page[-1].at, page[-1].id) if more else None)


def encode_cursor(at: datetime, entry_id: int) -> str:
    raw = json.dumps([at.isoformat(), entry_id], separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,200}")


def decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    """The position a cursor names, or None for anything this service did not hand out."""
    if not _CURSOR.fullmatch(cursor):
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, entry_id = json.loads(raw)
        at = datetime.fromisoformat(at_text)
    except (binascii.Error, ValueError, TypeError):
        return None
    if at.tzinfo is None or isinstance(entry_id, bool) or not isinstance(entry_id, int):
        return None
    return at, entry_id


def _json_safe(details: dict[str, Any]) -> dict[str, Any]:
    def fallback(value: object) -> str:
        return value.isoformat() if isinstance(value, datetime) else str(value)

    safe: dict[str, Any] = _without_nul(json.loads(json.dumps(details, default=fallback)))
    return safe


def _without_nul(value: Any) -> Any:
    """NUL becomes U+FFFD: details often echo what a caller sent (a path, a user name), and
    PostgreSQL refuses NUL in text and JSON, which would turn a refusal into a server error."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


class AccountService:
    def __init__(
        self,
        store: AccountStore,
        audit: AuditLog,
        clock: Clock,
        *,
        key_cache_seconds: float = KEY_CACHE_SECONDS,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._touched: dict[uuid.UUID, datetime] = {}
        # keyed by the token's hash, never the token: a memory dump shows no secret
        self._live: dict[str, _LiveKey] = {}
        self._cache_seconds = key_cache_seconds
        self._monotonic = monotonic
        # moves at every revocation or disabling: a lookup that began before one is not kept
        self._forgotten = 0

    # -- keys -------------------------------------------------------------------------------------

    async def create_key(
        self, user_id: str, *, role: Role | None = None, name: str = "", actor: str
    ) -> NewKey:
        """A new key for the user, creating the user (with `role`, default user) when new.

        An existing user keeps their role: asking for a different one is refused rather than
        silently ignored or, worse, silently granting admin through a key request.
        """
        problems: list[Problem] = []
        for check, value in ((check_user_id, user_id), (check_key_name, name)):
            try:
                check(value)
            except InvalidParametersError as exc:
                problems.extend(exc.problems)
        if role is not None:
            try:
                role = parse_role(str(role))
            except InvalidParametersError as exc:
                problems.extend(exc.problems)
        raise_if_any(problems, InvalidParametersError, "invalid key request")
        existing = await self._store.get_user(user_id)
        if existing is not None and role is not None and existing.role is not role:
            raise InvalidParametersError(
                (
                    Problem(
                        ProblemCode.INVALID_CHOICE,
                        "role",
                        f"user '{user_id}' exists with role '{existing.role}'; creating a key "
                        "does not change a role (leave the role out)",
                        allowed=(existing.role.value,),
                    ),
                ),
                "role does not match the existing user",
            )
        now = self._clock()
        user = UserInfo(
            id=user_id,
            display_name=user_id,
            role=role or Role.USER,
            created_at=now,
            disabled_at=None,
            quota_daily_images=None,
            quota_monthly_usd=None,
        )
        new = _new_key(user_id, name, now)
        user_created = await self._store.add_key(user, new.key, hash_token(new.token))
        if user_created:
            await self._audit.record(actor, AuditAction.USER_CREATED, user_id, role=user.role)
        await self._audit.record(
            actor,
            AuditAction.KEY_CREATED,
            str(new.key.id),
            user_id=user_id,
            prefix=new.key.prefix,
            name=name,
        )
        return replace(new, user_created=user_created)

    async def authenticate(self, token: str) -> Principal | None:
        """The caller behind a token, or None for anything that is not a live key of a live user."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return None
        digest = hash_token(token)
        now = self._monotonic()
        live = self._live.get(digest)
        if live is not None and now < live.until:
            await self._touch(live.key)
            return live.principal
        generation = self._forgotten
        found = await self._store.find_key(digest)
        if found is None:
            self._live.pop(digest, None)
            return None
        key, user, stored = found
        if not hmac.compare_digest(stored, digest) or key.revoked or user.disabled:
            self._live.pop(digest, None)
            return None
        principal = Principal(user_id=user.id, role=user.role, key_id=key.id)
        if self._cache_seconds > 0 and generation == self._forgotten:
            if len(self._live) >= _REMEMBERED_KEYS and digest not in self._live:
                self._live.clear()
            self._live[digest] = _LiveKey(key, principal, now + self._cache_seconds)
        await self._touch(key)
        return principal

    def _forget(self, *, key_id: uuid.UUID | None = None, user_id: str | None = None) -> None:
        """Drop remembered keys (one key, or every key of a user) so the next request reads."""
        self._forgotten += 1
        stale = [
            digest
            for digest, live in self._live.items()
            if live.key.id == key_id or (user_id is not None and live.key.user_id == user_id)
        ]
        for digest in stale:
            del self._live[digest]

    async def _touch(self, key: KeyInfo) -> None:
        now = self._clock()
        seen = [t for t in (key.last_used_at, self._touched.get(key.id)) if t is not None]
        if seen and now - max(seen) < TOUCH_EVERY:
            return
        if len(self._touched) >= _REMEMBERED_TOUCHES:
            self._touched.clear()
        self._touched[key.id] = now
        # conditional in the database too, so other processes do not write it again either
        await self._store.touch_key(key.id, now, now - TOUCH_EVERY)

    async def revoke_key(self, key_id: uuid.UUID, *, actor: str) -> KeyInfo:
        """Revoke a key; revoking it again returns it unchanged and records nothing new."""
        result = await self._store.revoke_key(key_id, self._clock())
        self._forget(key_id=key_id)
        if result is None:
            raise NotFound("key_id", key_id, "API key")
        key, changed = result
        if changed:
            await self._audit.record(
                actor, AuditAction.KEY_REVOKED, str(key.id), user_id=key.user_id, prefix=key.prefix
            )
        return key

    async def list_keys(self, user_id: str | None = None) -> list[KeyInfo]:
        return await self._store.list_keys(user_id)

    async def ensure_first_admin(self) -> NewKey | None:
        """On an empty database, create the `admin` user and a key for them; else None.

        Several processes may start together on a new database: the store inserts only while no
        user exists, and the user's primary key settles any race, so exactly one of them gets a
        key and the others get None.
        """
        now = self._clock()
        user = UserInfo(
            id=FIRST_ADMIN_ID,
            display_name=FIRST_ADMIN_ID,
            role=Role.ADMIN,
            created_at=now,
            disabled_at=None,
            quota_daily_images=None,
            quota_monthly_usd=None,
        )
        new = _new_key(FIRST_ADMIN_ID, "first admin key", now)
        if not await self._store.add_first_admin(user, new.key, hash_token(new.token)):
            return None
        await self._audit.record(
            "system",
            AuditAction.ADMIN_BOOTSTRAP,
            FIRST_ADMIN_ID,
            key_id=new.key.id,
            prefix=new.key.prefix,
        )
        return replace(new, user_created=True)

    # -- users ------------------------------------------------------------------------------------

    async def list_users(self) -> list[UserInfo]:
        return await self._store.list_users()

    async def get_user(self, user_id: str) -> UserInfo:
        # an id no user can have is not looked up (PostgreSQL refuses some, such as NUL)
        user = await self._store.get_user(user_id) if _plausible_id(user_id) else None
        if user is None:
            raise NotFound("user_id", user_id, "user")
        return user

    async def set_quota(
        self,
        user_id: str,
        *,
        daily_images: int | None,
        monthly_usd: float | None,
        actor: str,
    ) -> UserInfo:
        """Replace both quotas (None lifts a limit); recorded only when something changed."""
        raise_if_any(
            _quota_problems(daily_images, monthly_usd), InvalidParametersError, "invalid quota"
        )
        monthly = float(monthly_usd) if monthly_usd is not None else None
        plausible = _plausible_id(user_id)
        result = await self._store.set_quota(user_id, daily_images, monthly) if plausible else None
        if result is None:
            raise NotFound("user_id", user_id, "user")
        before, after = result
        if (before.quota_daily_images, before.quota_monthly_usd) != (
            after.quota_daily_images,
            after.quota_monthly_usd,
        ):
            await self._audit.record(
                actor,
                AuditAction.QUOTA_CHANGED,
                user_id,
                daily_images={"from": before.quota_daily_images, "to": after.quota_daily_images},
                monthly_usd={"from": before.quota_monthly_usd, "to": after.quota_monthly_usd},
            )
        return after

    async def set_disabled(self, user_id: str, disabled: bool, *, actor: str) -> UserInfo:
        """Disabling locks out every key of the user at once, without revoking them."""
        result = (
            await self._store.set_disabled(user_id, bool(disabled), self._clock())
            if _plausible_id(user_id)
            else None
        )
        if disabled:
            self._forget(user_id=user_id)
        if result is None:
            raise NotFound("user_id", user_id, "user")
        before, after = result
        if before.disabled != after.disabled:
            await self._audit.record(
                actor, AuditAction.USER_UPDATED, user_id, disabled=after.disabled
            )
        return after

    async def set_password(self, user_id: str, password: str, *, actor: str) -> None:
        """A password for signing in to the web studio (API clients keep using keys)."""
        reason = password_problem(password)
        if reason is not None:
            raise InvalidParametersError(
                (Problem(ProblemCode.OUT_OF_RANGE, "password", reason),), "the password was refused"
            )
        if not _plausible_id(user_id) or not await self._store.set_password_hash(
            user_id, hash_password(password)
        ):
            raise NotFound("user_id", user_id, "user")
        await self._audit.record(actor, AuditAction.USER_UPDATED, user_id, password="set")

    async def login(self, user_id: str, password: str) -> Principal | None:
        """The user if the password matches and the user is enabled; None otherwise.

        The hash is computed even for an unknown user, so timing does not tell which users
        exist.
        """
        found = await self._store.password_hash(user_id) if _plausible_id(user_id) else None
        stored = found[1] if found is not None else None
        ok = await asyncio.to_thread(verify_password, password[:1024], stored or _DUMMY_HASH)
        if found is None or stored is None or not ok or found[0].disabled:
            return None
        if needs_rehash(stored):
            await self._store.set_password_hash(user_id, hash_password(password))
        return Principal(found[0].id, found[0].role, None)


def _new_key(user_id: str, name: str, now: datetime) -> NewKey:
    token = new_token()
    key = KeyInfo(
        id=uuid.uuid4(),
        user_id=user_id,
        name=name,
        prefix=display_prefix(token),
        created_at=now,
        last_used_at=None,
        revoked_at=None,
    )
    return NewKey(key=key, token=token, user_created=False)


def _quota_problems(daily_images: object, monthly_usd: object) -> list[Problem]:
    problems: list[Problem] = []
    if daily_images is not None and (
        isinstance(daily_images, bool)
        or not isinstance(daily_images, int)
        or not 0 <= daily_images <= MAX_DAILY_IMAGES
    ):
        problems.append(
            Problem(
                ProblemCode.OUT_OF_RANGE,
                "daily_images",
                f"a whole number from 0 to {MAX_DAILY_IMAGES}, or none for no limit",
            )
        )
    if monthly_usd is not None and (
        isinstance(monthly_usd, bool)
        or not isinstance(monthly_usd, int | float)
        or not math.isfinite(monthly_usd)
        or not 0 <= monthly_usd <= MAX_MONTHLY_USD
    ):
        problems.append(
            Problem(
                ProblemCode.OUT_OF_RANGE,
                "monthly_usd",
                f"an amount from 0 to {MAX_MONTHLY_USD:,.0f} USD, or none for no limit",
            )
        )
    return problems


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def _plausible_id(user_id: str) -> bool:
    try:
        check_user_id(user_id)
    except InvalidParametersError:
        return False
    return True
