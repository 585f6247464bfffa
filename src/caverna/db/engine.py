"""Database engines with the settings each backend needs to be a safe job store.

SQLite (embedded mode): WAL, a busy timeout, and every transaction opened with BEGIN IMMEDIATE.
Measured on this kind of machine, the default deferred transactions let concurrent claimers
silently lose races or fail with "database is locked"; IMMEDIATE takes the write lock up front
so competing transactions queue behind the busy timeout instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from caverna.db.point_reads import PointRead, open_loop_connection

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


def default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'caverna.db').as_posix()}"


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://) and pick the async drivers."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    url = normalise_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        configure_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def configure_sqlite(sync_engine: Engine) -> None:
    """WAL, busy timeout, and BEGIN IMMEDIATE for every transaction that may write."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # let SQLAlchemy, not the driver, decide when transactions begin
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # reads run deferred (WAL readers never block); everything else takes the lock up front
        read_only = connection.get_execution_options().get(READ_ONLY)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


READ_ONLY = "caverna_read_only"
_GATES: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def write_gate(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[Any]:
    """One writer at a time per process on SQLite.

    SQLite has one write lock per file anyway; queueing writers on an asyncio lock instead of on
    the file lock keeps them from spinning in busy-wait threads, so the busy timeout is only ever
    spent on writers of other processes.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    gate = _GATES.get(engine.sync_engine)
    if gate is None:
        gate = _GATES[engine.sync_engine] = asyncio.Lock()
    return gate


@contextlib.asynccontextmanager
async def writing(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AsyncSession]:
    """A write transaction, committed on success and rolled back on error."""
    async with write_gate(engine), sessions() as session, session.begin():
        yield session


@contextlib.asynccontextmanager
async def reading(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A read-only session: on SQLite a deferred transaction that takes no write lock."""
    async with sessions() as session:
        await session.connection(execution_options={READ_ONLY: True})
        yield session


T = TypeVar("T")


class TransactionRunner:
    """Runs a function of a Connection as one transaction, the cheapest way for each backend.

    SQLite: the whole transaction runs in one dedicated thread on the standard driver, so it
    costs one hop between threads instead of one per statement, and the single thread is also
    the one writer of this process. PostgreSQL: the async driver, through run_sync.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        # the pooled connection point reads use on the event loop, made on first use
        self._loop: tuple[PoolProxiedConnection, sqlite3.Connection] | None = None
        if engine.dialect.name == "sqlite":
            url = engine.url.set(drivername="sqlite")
            self._sqlite = create_sync_engine(
                url, connect_args={"timeout": 30, "check_same_thread": False}
            )
            configure_sqlite(self._sqlite)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="caverna-sqlite")

    async def write(self, work: Callable[[Connection], T]) -> T:
        if self._sqlite is not None and self._thread is not None:
            sqlite = self._sqlite

            def run() -> T:
                with sqlite.begin() as connection:
                    return work(connection)

            return await asyncio.get_running_loop().run_in_executor(self._thread, run)
        async with self.engine.begin() as connection:
            return await connection.run_sync(work)

    async def read(self, work: Callable[[Connection], T]) -> T:
        if self._sqlite is not None and self._thread is not None:
            sqlite = self._sqlite

            def run() -> T:
                with sqlite.connect() as connection:
                    return work(connection.execution_options(**{READ_ONLY: True}))

            return await asyncio.get_running_loop().run_in_executor(self._thread, run)
        async with self.engine.connect() as connection:
            return await connection.run_sync(work)

    async def read_point(
        self, query: PointRead, params: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """One row by key: on SQLite right here on the event loop (see `point_reads`), falling
        back to `read` when the database is busy or anything else goes wrong there."""
        if self._sqlite is not None:
            try:
                return query.on_sqlite(self._loop_connection(), self._sqlite.dialect, params)
            except sqlite3.Error:
                self._drop_loop_connection()
        return await self.read(lambda connection: query.on_connection(connection, params))

    def _loop_connection(self) -> sqlite3.Connection:
        if self._loop is None:
            assert self._sqlite is not None
            raw = self._sqlite.raw_connection()
            try:
                self._loop = (raw, open_loop_connection(raw))
            except BaseException:
                raw.close()
                raise
        return self._loop[1]

    def _drop_loop_connection(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            with contextlib.suppress(Exception):
                loop[0].invalidate()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop[0].close()
            self._loop = None
        if self._sqlite is not None:
            self._sqlite.dispose()
