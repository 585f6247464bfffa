"""The verified-key cache: fewer lookups, and revocation or disabling still locks a key out.

Against real SQLite and PostgreSQL stores, with a hand-moved monotonic clock for the cache's
time to live, so expiry needs no sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.accounts import SqlAccountStore, SqlAuditStore
from caverna.db.engine import TransactionRunner
from caverna.domain.accounts import KeyInfo, Principal, Role, UserInfo
from caverna.services.accounts import KEY_CACHE_SECONDS, AccountService, AuditLog
from tests.factories import FakeClock


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(SqlAccountStore):
    """The real store, counting key lookups; a lookup can be held after it has read."""

    def __init__(self, runner: TransactionRunner) -> None:
        super().__init__(runner)
        self.lookups = 0
        self.hold: asyncio.Event | None = None
        self.read_done = asyncio.Event()

    async def find_key(self, key_hash: str) -> tuple[KeyInfo, UserInfo, str] | None:
        self.lookups += 1
        found = await super().find_key(key_hash)
        self.read_done.set()
        if self.hold is not None:
            await self.hold.wait()
        return found


class Process:
    """One process's view: its own store counter, audit log and account service (and cache)."""

    def __init__(self, runner: TransactionRunner, clock: FakeClock, ticker: Ticker) -> None:
        self.store = CountingStore(runner)
        self.service = AccountService(
            self.store, AuditLog(SqlAuditStore(runner), clock), clock, monotonic=ticker
        )


@pytest.fixture
async def runner(db_engine: AsyncEngine) -> AsyncIterator[TransactionRunner]:
    db = TransactionRunner(db_engine)
    yield db
    db.close()


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
def one(runner: TransactionRunner, ticker: Ticker) -> Process:
    return Process(runner, FakeClock(), ticker)


async def test_a_live_key_is_looked_up_once_per_interval(one: Process, ticker: Ticker) -> None:
    new = await one.service.create_key("alice", actor="cli")
    expected = Principal(user_id="alice", role=Role.USER, key_id=new.key.id)
    for _ in range(5):
        assert await one.service.authenticate(new.token) == expected
    assert one.store.lookups == 1

    ticker.now += KEY_CACHE_SECONDS - 0.01
    assert await one.service.authenticate(new.token) == expected
    assert one.store.lookups == 1
    ticker.now += 0.02
    assert await one.service.authenticate(new.token) == expected
    assert one.store.lookups == 2


async def test_unknown_tokens_are_looked_up_every_time(one: Process) -> None:
    token = "cav_" + "x" * 43
    for _ in range(3):
        assert await one.service.authenticate(token) is None
    assert one.store.lookups == 3


async def test_revoking_locks_the_key_out_at_once_in_this_process(one: Process) -> None:
    new = await one.service.create_key("alice", actor="cli")
    kept = await one.service.create_key("alice", actor="cli")
    assert await one.service.authenticate(new.token) is not None
    assert await one.service.authenticate(kept.token) is not None
    await one.service.revoke_key(new.key.id, actor="admin")
    assert await one.service.authenticate(new.token) is None
    # the user's other key stays remembered: only the revoked one was forgotten
    lookups = one.store.lookups
    assert await one.service.authenticate(kept.token) is not None
    assert one.store.lookups == lookups


async def test_disabling_locks_every_key_out_at_once_and_enabling_lets_them_back(
    one: Process,
) -> None:
    first = await one.service.create_key("alice", actor="cli")
    second = await one.service.create_key("alice", actor="cli")
    other = await one.service.create_key("bob", actor="cli")
    for new in (first, second, other):
        assert await one.service.authenticate(new.token) is not None
    await one.service.set_disabled("alice", True, actor="admin")
    assert await one.service.authenticate(first.token) is None
    assert await one.service.authenticate(second.token) is None
    assert await one.service.authenticate(other.token) is not None
    await one.service.set_disabled("alice", False, actor="admin")
    assert await one.service.authenticate(first.token) is not None


async def test_another_process_notices_a_revocation_within_the_interval(
    one: Process, runner: TransactionRunner, ticker: Ticker
) -> None:
    other = Process(runner, FakeClock(), ticker)
    new = await one.service.create_key("alice", actor="cli")
    assert await other.service.authenticate(new.token) is not None
    await one.service.revoke_key(new.key.id, actor="admin")
    await one.service.set_disabled("alice", True, actor="admin")

    # the bound documented for other processes: still remembered until the interval ends
    ticker.now += KEY_CACHE_SECONDS / 2
    assert await other.service.authenticate(new.token) is not None
    ticker.now += KEY_CACHE_SECONDS / 2
    assert await other.service.authenticate(new.token) is None


async def test_a_lookup_that_began_before_a_revocation_is_not_remembered(one: Process) -> None:
    new = await one.service.create_key("alice", actor="cli")
    one.store.hold = asyncio.Event()
    # this lookup reads the key while it is still live, and is held before it returns
    pending = asyncio.create_task(one.service.authenticate(new.token))
    await asyncio.wait_for(one.store.read_done.wait(), 10)
    await one.service.revoke_key(new.key.id, actor="admin")
    one.store.hold.set()
    assert await asyncio.wait_for(pending, 10) is not None
    one.store.hold = None
    assert await one.service.authenticate(new.token) is None


async def test_no_cache_when_the_interval_is_zero(
    runner: TransactionRunner, ticker: Ticker
) -> None:
    store = CountingStore(runner)
    clock = FakeClock()
    service = AccountService(
        store, AuditLog(SqlAuditStore(runner), clock), clock, key_cache_seconds=0, monotonic=ticker
    )
    new = await service.create_key("alice", actor="cli")
    for _ in range(3):
        assert await service.authenticate(new.token) is not None
    assert store.lookups == 3
