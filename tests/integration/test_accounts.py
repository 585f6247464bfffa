"""Accounts, API keys, quotas and the audit log against real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.accounts import SqlAccountStore, SqlAuditStore
from caverna.db.engine import TransactionRunner, create_engine
from caverna.db.models import ApiKey, AuditRow, User
from caverna.domain.accounts import AuditAction, KeyInfo, Principal, Role, UserInfo
from caverna.domain.problems import InvalidParametersError, NotFound
from caverna.services.accounts import AUDIT_PAGE_MAX, AccountService, AuditLog
from tests.factories import FakeClock

TOKEN = re.compile(r"cav_[A-Za-z0-9_-]{43}")


class CountingStore(SqlAccountStore):
    """The real store, counting key lookups, to see which requests reach the database."""

    lookups = 0

    async def find_key(self, key_hash: str) -> tuple[KeyInfo, UserInfo, str] | None:
        self.lookups += 1
        return await super().find_key(key_hash)


class Accounts:
    def __init__(self, runner: TransactionRunner, clock: FakeClock) -> None:
        self.store = CountingStore(runner)
        self.audit = AuditLog(SqlAuditStore(runner), clock)
        self.service = AccountService(self.store, self.audit, clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def runner(db_engine: AsyncEngine) -> AsyncIterator[TransactionRunner]:
    db = TransactionRunner(db_engine)
    yield db
    db.close()


@pytest.fixture
def accounts(runner: TransactionRunner, clock: FakeClock) -> Accounts:
    return Accounts(runner, clock)


async def rows(engine: AsyncEngine, model: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(model.__table__))).all())


async def audit_actions(audit: AuditLog) -> list[str]:
    entries, _ = await audit.query(limit=AUDIT_PAGE_MAX)
    return [entry.action.value for entry in reversed(entries)]


# -- keys ---------------------------------------------------------------------------------------


async def test_a_first_key_creates_the_user_and_a_second_does_not(accounts: Accounts) -> None:
    first = await accounts.service.create_key("alice", name="laptop", actor="cli")
    second = await accounts.service.create_key("alice", actor="cli")

    assert first.user_created
    assert not second.user_created
    assert TOKEN.fullmatch(first.token)
    assert first.token != second.token
    assert first.key.prefix == first.token[:8]
    assert first.key.name == "laptop"
    user = await accounts.service.get_user("alice")
    assert user.role is Role.USER
    assert (user.quota_daily_images, user.quota_monthly_usd, user.disabled_at) == (None, None, None)
    keys = await accounts.service.list_keys("alice")
    assert {k.id for k in keys} == {first.key.id, second.key.id}
    assert await audit_actions(accounts.audit) == ["user_created", "key_created", "key_created"]


async def test_an_admin_is_created_with_the_role_asked_for(accounts: Accounts) -> None:
    new = await accounts.service.create_key("root.ops", role=Role.ADMIN, actor="cli")
    assert (await accounts.service.get_user("root.ops")).role is Role.ADMIN
    principal = await accounts.service.authenticate(new.token)
    assert principal == Principal("root.ops", Role.ADMIN, new.key.id)
    assert principal.is_admin


async def test_only_a_hash_of_the_token_is_stored(
    accounts: Accounts, db_engine: AsyncEngine
) -> None:
    new = await accounts.service.create_key("alice", actor="cli")
    (row,) = await rows(db_engine, ApiKey)
    assert row.key_hash == hashlib.sha256(new.token.encode()).hexdigest()
    assert row.prefix == new.token[:8]
    secret_part = new.token[8:]
    for value in row:
        assert secret_part not in str(value)
    for entry in await rows(db_engine, AuditRow):
        assert secret_part not in str(entry.details)


async def test_authenticate_accepts_only_a_live_key_of_an_enabled_user(
    accounts: Accounts,
) -> None:
    service = accounts.service
    new = await service.create_key("alice", actor="cli")
    assert await service.authenticate(new.token) == Principal("alice", Role.USER, new.key.id)

    unknown = "cav_" + "A" * 43
    assert await service.authenticate(unknown) is None
    assert (
        await service.authenticate(new.token[:-1] + ("B" if new.token[-1] != "B" else "C")) is None
    )

    await service.set_disabled("alice", True, actor="admin")
    assert await service.authenticate(new.token) is None
    await service.set_disabled("alice", False, actor="admin")
    assert await service.authenticate(new.token) is not None

    revoked = await service.revoke_key(new.key.id, actor="admin")
    assert revoked.revoked_at is not None
    assert await service.authenticate(new.token) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "cav_",
        "cav_short",
        "CAV_" + "a" * 43,
        "key_" + "a" * 43,
        "cav_" + "a" * 42 + "=",
        "cav_" + "a" * 42 + " ",
        "cav_" + "é" * 43,
        "cav_" + "a" * 500,
    ],
)
async def test_malformed_tokens_are_refused_without_a_lookup(
    accounts: Accounts, token: str
) -> None:
    await accounts.service.create_key("alice", actor="cli")
    assert await accounts.service.authenticate(token) is None
    assert accounts.store.lookups == 0


async def test_last_used_is_written_at_most_once_a_minute(
    accounts: Accounts, runner: TransactionRunner, clock: FakeClock
) -> None:
    new = await accounts.service.create_key("alice", actor="cli")
    start = clock.now

    async def last_used() -> Any:
        (key,) = await accounts.service.list_keys("alice")
        return key.last_used_at

    assert await last_used() is None
    await accounts.service.authenticate(new.token)
    assert await last_used() == start

    clock.advance(30)
    await accounts.service.authenticate(new.token)
    # another process, with nothing remembered, also leaves a fresh timestamp alone
    other = Accounts(runner, clock)
    await other.service.authenticate(new.token)
    assert await last_used() == start

    clock.advance(31)
    await accounts.service.authenticate(new.token)
    assert await last_used() == start + timedelta(seconds=61)


async def test_revoking_is_idempotent_and_unknown_keys_are_not_found(
    accounts: Accounts, clock: FakeClock
) -> None:
    new = await accounts.service.create_key("alice", actor="cli")
    first = await accounts.service.revoke_key(new.key.id, actor="admin")
    clock.advance(10)
    again = await accounts.service.revoke_key(new.key.id, actor="admin")
    assert first.revoked_at == again.revoked_at == clock.now - timedelta(seconds=10)
    assert (await accounts.service.list_keys())[0].revoked_at == first.revoked_at
    assert (await audit_actions(accounts.audit)).count("key_revoked") == 1

    with pytest.raises(NotFound) as caught:
        await accounts.service.revoke_key(uuid.uuid4(), actor="admin")
    assert caught.value.problem.code == "not_found"
    assert caught.value.problem.field == "key_id"


@pytest.mark.parametrize(
    ("user_id", "code", "suggestion"),
    [
        ("", "invalid_characters", None),
        ("Alice", "invalid_characters", "alice"),
        ("al ice", "invalid_characters", None),
        ("ali/ce", "invalid_characters", None),
        ("ålice", "invalid_characters", None),
        ("a" * 65, "too_long", None),
    ],
)
async def test_bad_user_ids_are_rejected_and_change_nothing(
    accounts: Accounts, db_engine: AsyncEngine, user_id: str, code: str, suggestion: str | None
) -> None:
    with pytest.raises(InvalidParametersError) as caught:
        await accounts.service.create_key(user_id, actor="cli")
    (problem,) = caught.value.problems
    assert (problem.code, problem.field, problem.suggestion) == (code, "user_id", suggestion)
    assert "lowercase letters, digits" in problem.message
    assert await rows(db_engine, User) == []
    assert await rows(db_engine, ApiKey) == []
    assert await rows(db_engine, AuditRow) == []


async def test_the_longest_user_id_and_every_allowed_character_are_accepted(
    accounts: Accounts,
) -> None:
    for user_id in ("a" * 64, "a.b_c-9", "0"):
        assert (await accounts.service.create_key(user_id, actor="cli")).user_created


async def test_every_bad_field_of_a_key_request_is_reported_at_once(
    accounts: Accounts, db_engine: AsyncEngine
) -> None:
    with pytest.raises(InvalidParametersError) as caught:
        await accounts.service.create_key(
            "Bob",
            role="root",  # type: ignore[arg-type]  # what an untyped caller may pass
            name="x" * 101,
            actor="cli",
        )
    by_field = {p.field: p for p in caught.value.problems}
    assert set(by_field) == {"user_id", "name", "role"}
    assert by_field["role"].code == "invalid_choice"
    assert by_field["role"].allowed == ("user", "admin")
    assert by_field["name"].code == "too_long"
    assert await rows(db_engine, User) == []


async def test_a_key_request_does_not_change_an_existing_role(
    accounts: Accounts, db_engine: AsyncEngine
) -> None:
    await accounts.service.create_key("alice", actor="cli")
    with pytest.raises(InvalidParametersError) as caught:
        await accounts.service.create_key("alice", role=Role.ADMIN, actor="cli")
    (problem,) = caught.value.problems
    assert (problem.code, problem.field, problem.allowed) == ("invalid_choice", "role", ("user",))
    assert (await accounts.service.get_user("alice")).role is Role.USER
    assert len(await rows(db_engine, ApiKey)) == 1
    # asking for the role the user already has is fine
    assert not (
        await accounts.service.create_key("alice", role=Role.USER, actor="cli")
    ).user_created


async def test_concurrent_first_keys_create_the_user_once(accounts: Accounts) -> None:
    results = await asyncio.gather(
        *(accounts.service.create_key("carol", actor="cli") for _ in range(5))
    )
    assert sum(new.user_created for new in results) == 1
    assert len(await accounts.service.list_keys("carol")) == 5
    assert (await audit_actions(accounts.audit)).count("user_created") == 1


# -- users and quotas ----------------------------------------------------------------------------


async def test_users_are_listed_and_looked_up(accounts: Accounts) -> None:
    for user_id in ("bob", "alice"):
        await accounts.service.create_key(user_id, actor="cli")
    assert [u.id for u in await accounts.service.list_users()] == ["alice", "bob"]
    assert (await accounts.service.get_user("bob")).display_name == "bob"
    with pytest.raises(NotFound) as caught:
        await accounts.service.get_user("nobody")
    assert caught.value.to_dict()["errors"] == [
        {"code": "not_found", "field": "user_id", "message": "no user with user_id 'nobody'"}
    ]
    assert len(await accounts.service.list_keys()) == 2


async def test_quotas_are_set_cleared_and_audited(accounts: Accounts) -> None:
    await accounts.service.create_key("alice", actor="cli")
    user = await accounts.service.set_quota("alice", daily_images=20, monthly_usd=12.5, actor="ops")
    assert (user.quota_daily_images, user.quota_monthly_usd) == (20, 12.5)
    stored = await accounts.service.get_user("alice")
    assert (stored.quota_daily_images, stored.quota_monthly_usd) == (20, 12.5)

    await accounts.service.set_quota("alice", daily_images=20, monthly_usd=12.5, actor="ops")
    cleared = await accounts.service.set_quota(
        "alice", daily_images=0, monthly_usd=None, actor="ops"
    )
    assert (cleared.quota_daily_images, cleared.quota_monthly_usd) == (0, None)

    entries, _ = await accounts.audit.query(action=AuditAction.QUOTA_CHANGED)
    assert len(entries) == 2  # the repeat changed nothing, so it is not recorded
    assert entries[0].actor == "ops"
    assert entries[0].target == "alice"
    assert entries[0].details == {
        "daily_images": {"from": 20, "to": 0},
        "monthly_usd": {"from": 12.5, "to": None},
    }


@pytest.mark.parametrize(
    ("daily", "monthly", "fields"),
    [
        (-1, None, {"daily_images"}),
        (None, -0.01, {"monthly_usd"}),
        (1.5, math.nan, {"daily_images", "monthly_usd"}),
        (True, math.inf, {"daily_images", "monthly_usd"}),
        (2**31, 2e9, {"daily_images", "monthly_usd"}),
    ],
)
async def test_bad_quotas_are_rejected_and_change_nothing(
    accounts: Accounts, daily: Any, monthly: Any, fields: set[str]
) -> None:
    await accounts.service.create_key("alice", actor="cli")
    await accounts.service.set_quota("alice", daily_images=5, monthly_usd=1.0, actor="ops")
    with pytest.raises(InvalidParametersError) as caught:
        await accounts.service.set_quota(
            "alice", daily_images=daily, monthly_usd=monthly, actor="ops"
        )
    assert {p.field for p in caught.value.problems} == fields
    assert {p.code for p in caught.value.problems} == {"out_of_range"}
    user = await accounts.service.get_user("alice")
    assert (user.quota_daily_images, user.quota_monthly_usd) == (5, 1.0)
    assert (await audit_actions(accounts.audit)).count("quota_changed") == 1


async def test_quota_and_disable_of_an_unknown_user_are_not_found(accounts: Accounts) -> None:
    with pytest.raises(NotFound):
        await accounts.service.set_quota("ghost", daily_images=1, monthly_usd=None, actor="ops")
    with pytest.raises(NotFound):
        await accounts.service.set_disabled("ghost", True, actor="ops")
    assert await audit_actions(accounts.audit) == []


async def test_disabling_keeps_the_first_time_and_is_audited_once(
    accounts: Accounts, clock: FakeClock
) -> None:
    await accounts.service.create_key("alice", actor="cli")
    first = await accounts.service.set_disabled("alice", True, actor="ops")
    clock.advance(60)
    again = await accounts.service.set_disabled("alice", True, actor="ops")
    assert first.disabled_at == again.disabled_at == clock.now - timedelta(seconds=60)
    enabled = await accounts.service.set_disabled("alice", False, actor="ops")
    assert enabled.disabled_at is None
    assert (await accounts.service.get_user("alice")).disabled_at is None
    entries, _ = await accounts.audit.query(action="user_updated")
    assert [e.details for e in entries] == [{"disabled": False}, {"disabled": True}]


# -- the first admin -----------------------------------------------------------------------------


async def test_the_first_admin_is_created_once_even_by_two_processes_at_once(
    database_url: str, db_engine: AsyncEngine, clock: FakeClock
) -> None:
    engines = [create_engine(database_url), create_engine(database_url)]
    runners = [TransactionRunner(engine) for engine in engines]
    try:
        services = [Accounts(runner, clock) for runner in runners]
        for _round in range(5):
            async with db_engine.begin() as connection:
                for model in (ApiKey, User, AuditRow):
                    await connection.execute(delete(model))
            results = await asyncio.gather(*(s.service.ensure_first_admin() for s in services))
            created = [result for result in results if result is not None]
            assert len(created) == 1
            (new,) = created
            assert new.user_created
            assert new.key.user_id == "admin"
            assert [u.id for u in await services[0].service.list_users()] == ["admin"]
            assert [k.id for k in await services[0].service.list_keys()] == [new.key.id]
            principal = await services[1].service.authenticate(new.token)
            assert principal is not None
            assert principal.is_admin
            entries, _ = await services[0].audit.query()
            assert [(e.action, e.target) for e in entries] == [
                (AuditAction.ADMIN_BOOTSTRAP, "admin")
            ]
            assert entries[0].details["key_id"] == str(new.key.id)
            assert await services[0].service.ensure_first_admin() is None
    finally:
        for runner in runners:
            runner.close()
        for engine in engines:
            await engine.dispose()


async def test_no_first_admin_once_anyone_exists(accounts: Accounts) -> None:
    await accounts.service.create_key("alice", actor="cli")
    assert await accounts.service.ensure_first_admin() is None
    assert [u.id for u in await accounts.service.list_users()] == ["alice"]


# -- the audit log -------------------------------------------------------------------------------


async def test_audit_entries_are_filtered_and_paged_newest_first(
    accounts: Accounts, clock: FakeClock
) -> None:
    audit = accounts.audit
    start = clock.now
    recorded = []
    for index in range(9):
        # three entries share each timestamp, so pages must break ties by id
        if index % 3 == 0:
            clock.advance(1)
        actor = "alice" if index % 2 == 0 else "bob"
        action = AuditAction.IMAGE_DELETED if index < 6 else AuditAction.SHARE_CREATED
        recorded.append(await audit.record(actor, action, f"img-{index % 4}", n=index))

    seen = []
    cursor = None
    pages = 0
    while True:
        page, cursor = await audit.query(cursor=cursor, limit=4)
        pages += 1
        seen.extend(page)
        if cursor is None:
            break
    assert pages == 3
    assert [e.details["n"] for e in seen] == list(range(8, -1, -1))
    assert seen == list(reversed(recorded))

    by_actor, _ = await audit.query(actor="bob")
    assert [e.details["n"] for e in by_actor] == [7, 5, 3, 1]
    by_action, _ = await audit.query(action="share_created")
    assert [e.details["n"] for e in by_action] == [8, 7, 6]
    by_target, _ = await audit.query(target="img-1")
    assert [e.details["n"] for e in by_target] == [5, 1]
    window, _ = await audit.query(
        since=start + timedelta(seconds=2), until=start + timedelta(seconds=3)
    )
    assert [e.details["n"] for e in window] == [5, 4, 3]
    combined, next_cursor = await audit.query(actor="alice", action=AuditAction.IMAGE_DELETED)
    assert [e.details["n"] for e in combined] == [4, 2, 0]
    assert next_cursor is None

    first, cursor = await audit.query(actor="alice", limit=2)
    rest, end = await audit.query(actor="alice", limit=2, cursor=cursor)
    assert [e.details["n"] for e in first + rest] == [8, 6, 4, 2]
    assert end is not None


async def test_a_page_is_never_larger_than_the_cap(accounts: Accounts) -> None:
    for index in range(AUDIT_PAGE_MAX + 1):
        await accounts.audit.record("alice", AuditAction.RATE_LIMITED, None, n=index)
    page, cursor = await accounts.audit.query(limit=10_000)
    assert len(page) == AUDIT_PAGE_MAX
    assert cursor is not None
    rest, end = await accounts.audit.query(limit=10_000, cursor=cursor)
    assert [e.details["n"] for e in rest] == [0]
    assert end is None


async def test_details_are_stored_as_json(accounts: Accounts, clock: FakeClock) -> None:
    image_id = uuid.uuid4()
    entry = await accounts.audit.record(
        "x" * 100, AuditAction.IMAGE_CANCELLED, "t" * 300, image=image_id, at=clock.now, n=1.5
    )
    (stored,), _ = await accounts.audit.query()
    assert stored == entry
    assert stored.actor == "x" * 64
    assert stored.target == "t" * 128
    assert stored.details == {"image": str(image_id), "at": clock.now.isoformat(), "n": 1.5}


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor!",
        "%%%",
        _cursor(b"not json"),
        _cursor(b'{"at": 1}'),
        _cursor(b'["2026-11-01T12:00:00", 3]'),  # no time zone
        _cursor(b'["2026-11-01T12:00:00+00:00", "3"]'),
        _cursor(b'["2026-11-01T12:00:00+00:00", true]'),
        _cursor(b'["yesterday", 3]'),
        "A" * 500,
    ],
)
async def test_a_malformed_cursor_is_a_clear_error(accounts: Accounts, cursor: str) -> None:
    with pytest.raises(InvalidParametersError) as caught:
        await accounts.audit.query(cursor=cursor)
    (problem,) = caught.value.problems
    assert (problem.code, problem.field) == ("invalid_cursor", "cursor")


async def test_bad_audit_filters_are_reported_together(
    accounts: Accounts, clock: FakeClock
) -> None:
    with pytest.raises(InvalidParametersError) as caught:
        await accounts.audit.query(
            action="deleted_everything",
            since=clock.now,
            until=clock.now - timedelta(seconds=1),
            limit=0,
        )
    by_field = {p.field: p for p in caught.value.problems}
    assert set(by_field) == {"action", "until", "limit"}
    assert by_field["action"].code == "invalid_choice"
    assert "image_deleted" in by_field["action"].allowed
    assert by_field["limit"].code == "out_of_range"

    with pytest.raises(InvalidParametersError) as naive:
        await accounts.audit.query(since=clock.now.replace(tzinfo=None))
    assert naive.value.problems[0].field == "since"
