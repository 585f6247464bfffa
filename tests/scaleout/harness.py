"""Real processes on loopback for the scale-out run and the fault tests (and bench/scaleout.py).

Everything here is started by this module, on free 127.0.0.1 ports, and ended by its own PID:
`caverna serve` / `caverna worker` subprocesses with their own environment and log files, a
private PostgreSQL *database* on the system server (created per run, dropped afterwards; the
server itself is never touched), a private `redis-server` process, a moto S3 server process, an
optional TCP proxy in front of it (to make the storage unreachable without losing its objects),
and the OpenAI fake in a thread of this process (so a test can script its misbehaviour).
Every wait is bounded; `Cluster` closes whatever was started, in reverse order, in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import aiohttp
import asyncpg
import boto3
from sqlalchemy import func, select

from caverna.bootstrap import build_container, open_runtime
from caverna.config import Settings
from caverna.db.engine import create_engine
from caverna.db.migrate import upgrade
from caverna.db.models import ImageRow
from tests.fakes.openai_server import FakeOpenAI

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = os.environ.get(
    "CAVERNA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
S3_ACCESS_KEY_ID = "caverna-test-key"
S3_SECRET_ACCESS_KEY = "caverna-test-secret"
S3_REGION = "us-east-1"
SECRET_KEY = "scale-out-test-secret-0123456789"
START_TIMEOUT = 60.0
WORKER_STARTED = re.compile(r"^worker \S+ started$", re.MULTILINE)
STOP_TIMEOUT = 15.0
T = TypeVar("T")


class ServiceMissing(RuntimeError):
    """A service this run needs cannot be had here (the message says which and why)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOOPBACK, port)) == 0


async def until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll `check` until it is true; AssertionError naming `what` after `timeout` seconds.

    Only for state held by other processes (rows, ports, HTTP answers), which offer nothing to
    await: every wait in this package goes through here so each one is bounded.
    """
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


# --- processes ----------------------------------------------------------------------------------


class ManagedProcess:
    """One child process with its output in a log file; ended only through its own PID."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Self:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts}: {' '.join(self.argv)}\n".encode())
        log.flush()
        try:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up, as in a crash or an OOM kill."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended in time."""
        if not self.alive:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class CavernaProcess(ManagedProcess):
    """`caverna serve` (with or without workers) or `caverna worker`."""

    def __init__(
        self, name: str, role: str, env: Mapping[str, str], log_dir: Path, *, port: int = 0
    ) -> None:
        self.role = role
        self.port = port or free_port()
        command = [sys.executable, "-m", "caverna"]
        if role == "worker":
            argv = [*command, "worker"]
        else:
            argv = [*command, "serve", "--host", LOOPBACK, "--port", str(self.port)]
            if role == "api":
                argv.append("--no-workers")
        super().__init__(name, argv, env, log_dir)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until /readyz says ready (a worker has no HTTP side: until it says it started)."""

        async def ready() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.log_tail()}")
            if self.role == "worker":
                return len(WORKER_STARTED.findall(self.log_text())) >= self.starts
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(2)) as answer,
                ):
                    return answer.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await until(ready, timeout, f"{self.name} to be ready", interval=0.2)


# --- PostgreSQL: a private database on the system server ----------------------------------------


class PrivateDatabase:
    """A database of its own on the system PostgreSQL, migrated, dropped on close.

    Outages are made on this database only: its backends are terminated, and new connections
    are refused with ALLOW_CONNECTIONS false while `blocked()`. The server is never restarted.
    """

    def __init__(self, admin_url: str = POSTGRES_ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.name = f"caverna_scale_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.url = admin_url.rsplit("/", 1)[0] + f"/{self.name}"

    @staticmethod
    async def probe(admin_url: str = POSTGRES_ADMIN_URL) -> str | None:
        try:
            connection = await asyncpg.connect(admin_url, timeout=3)
            await connection.close()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            return f"PostgreSQL at {admin_url} is not reachable: {exc}"
        return None

    async def _admin(self, *statements: str) -> None:
        connection = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def create(self) -> str:
        await self._admin(f'CREATE DATABASE "{self.name}"')
        await upgrade(self.url)
        return self.url

    async def terminate_connections(self) -> int:
        connection = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.name,
            )
        finally:
            await connection.close()
        return len(rows)

    async def block(self) -> None:
        """Refuse new connections to this database and cut every open one."""
        await self._admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false')
        await self.terminate_connections()

    async def unblock(self) -> None:
        await self._admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')

    async def drop(self) -> None:
        await self._admin(
            f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true',
            f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)',
        )


# --- Redis --------------------------------------------------------------------------------------


class PrivateRedis(ManagedProcess):
    """`redis-server` on its own port, without persistence; restartable on the same port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceMissing("redis-server is not installed (apt-get install redis-server)")
        argv = [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", ""]
        argv += ["--appendonly", "no", "--daemonize", "no", "--dir", str(log_dir)]
        super().__init__("redis", argv, os.environ, log_dir)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    async def wait_ready(self, timeout: float = 20.0) -> None:
        async def answers() -> bool:
            if not self.alive:
                raise AssertionError(f"redis-server exited:\n{self.log_tail()}")
            try:
                reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
            except OSError:
                return False
            try:
                writer.write(b"PING\r\n")
                await writer.drain()
                return (await asyncio.wait_for(reader.readline(), 2)).startswith(b"+PONG")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        await until(answers, timeout, "redis-server to answer PING")


# --- S3: moto's server in a process, and a proxy that can cut it off -----------------------------


def s3_environment() -> dict[str, str]:
    """This environment without settings of its own, and dummy credentials for moto (endpoint
    overrides from the shell are dropped with every other AWS_ variable)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "CAVERNA_", "OPENAI_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID=S3_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=S3_SECRET_ACCESS_KEY,
        AWS_DEFAULT_REGION=S3_REGION,
    )
    return env


class MotoS3(ManagedProcess):
    """moto's S3 server in its own process (its objects live in that process's memory)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)]
        super().__init__("moto-s3", argv, s3_environment(), log_dir)

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def wait_ready(self, timeout: float = 30.0) -> None:
        async def listening() -> bool:
            if not self.alive:
                raise AssertionError(f"moto server exited:\n{self.log_tail()}")
            return port_open(self.port)

        await until(listening, timeout, "the moto S3 server to listen")

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_ACCESS_KEY_ID,
            aws_secret_access_key=S3_SECRET_ACCESS_KEY,
        )

    def create_bucket(self) -> str:
        name = f"caverna-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)


class LoopThread:
    """An event loop of its own in a daemon thread, for servers that must outlive a test's
    blocking calls (the OpenAI fake, the TCP proxy)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coroutine: Awaitable[T], timeout: float = 30.0) -> T:
        async def wrapped() -> T:
            return await coroutine

        future: Future[T] = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class TcpProxy:
    """Forwards a port to another; `cut()` closes the port and every connection through it,
    `restore()` listens again on the same port. The server behind keeps its state."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._thread = LoopThread("tcp-proxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def restore(self) -> None:
        self._thread.call(self._listen())

    def cut(self) -> None:
        self._thread.call(self._cut())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()
        self._thread.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, LOOPBACK, self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                LOOPBACK, self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    target.write(data)
                    await target.drain()
            with contextlib.suppress(OSError):
                target.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers.difference_update((writer, upstream_writer))


class FakeOpenAIThread:
    """The OpenAI fake served from a thread of this process, so tests can script it."""

    def __init__(self) -> None:
        self._thread = LoopThread("fake-openai")
        self.fake = FakeOpenAI(image_size=(64, 64), distinct_images=8)
        self.base_url = self._thread.call(self.fake.start())

    def script(self, change: Callable[[FakeOpenAI], None]) -> None:
        """Apply `change` to the fake inside its own loop (its fault queue is not thread-safe)."""

        async def apply() -> None:
            change(self.fake)

        self._thread.call(apply())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._thread.call(self.fake.stop())
        self._thread.close()


# --- accounts and the database as the tests see it ---------------------------------------------


@dataclass(frozen=True)
class Account:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def provision(
    env: Mapping[str, str], users: list[str], quotas: Mapping[str, int] | None = None
) -> dict[str, Account]:
    """One API key per user (and daily image quotas), written straight to the run's database."""
    settings = Settings(
        database_url=env["CAVERNA_DATABASE_URL"],
        data_dir=Path(env["CAVERNA_DATA_DIR"]),
        image_processes=0,
        secret_key=env.get("CAVERNA_SECRET_KEY"),
        storage_url="memory://",  # accounts only: no object is written
    )
    runtime = await open_runtime(build_container(settings))
    try:
        accounts = {}
        for user in users:
            new = await runtime.accounts.create_key(user, name="load", actor="test")
            accounts[user] = Account(user, new.token)
        for user, daily in (quotas or {}).items():
            await runtime.accounts.set_quota(
                user, daily_images=daily, monthly_usd=None, actor="test"
            )
        return accounts
    finally:
        await runtime.aclose()


@dataclass(frozen=True)
class JobRow:
    id: uuid.UUID
    user_id: str
    status: str
    attempts: int
    provider: str
    storage_key: str | None
    thumbnail_key: str | None
    attempt_log: list[dict[str, Any]]
    error_code: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None


async def job_rows(database_url: str) -> list[JobRow]:
    """Every image row, read directly: the source of truth the assertions check."""
    engine = create_engine(database_url)
    columns = [getattr(ImageRow, name) for name in JobRow.__dataclass_fields__]
    try:
        async with engine.connect() as connection:
            result = await connection.execute(select(*columns))
            return [
                JobRow(**{**row._mapping, "attempt_log": list(row.attempt_log or [])})
                for row in result
            ]
    finally:
        await engine.dispose()


async def status_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            query = select(ImageRow.status, func.count()).group_by(ImageRow.status)
            return {status: int(count) for status, count in await connection.execute(query)}
    finally:
        await engine.dispose()


# --- HTTP ---------------------------------------------------------------------------------------

# below uvicorn's 5 s keep-alive: a connection the server is about to close is never reused
# (a POST sent on it would be reset, and a POST is not retried)
CLIENT_KEEPALIVE_SECONDS = 2.0


def client_session(connections: int = 100) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=CLIENT_KEEPALIVE_SECONDS)
    return aiohttp.ClientSession(connector=connector)


@dataclass
class Answer:
    status: int
    content_type: str
    body: Any
    seconds: float
    headers: dict[str, str] = field(default_factory=dict)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    account: Account,
    body: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> Answer:
    started = time.monotonic()
    async with session.request(
        method, url, json=body, headers=account.headers, timeout=aiohttp.ClientTimeout(timeout)
    ) as answer:
        text = await answer.text()
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        seconds = time.monotonic() - started
        return Answer(answer.status, answer.content_type, parsed, seconds, dict(answer.headers))


async def sse_statuses(
    session: aiohttp.ClientSession, url: str, account: Account, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Every `status` event of an image's event stream until its `end` event."""
    statuses: list[dict[str, Any]] = []
    event = ""
    async with session.get(
        url, headers=account.headers, timeout=aiohttp.ClientTimeout(timeout)
    ) as stream:
        assert stream.status == 200, await stream.text()
        assert stream.content_type == "text/event-stream"
        async for raw in stream.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "status":
                statuses.append(json.loads(line[6:]))
            elif line.startswith("data: ") and event == "end":
                return statuses
    raise AssertionError(f"the event stream ended without an end event after {statuses}")


# --- the cluster --------------------------------------------------------------------------------


@dataclass
class Cluster:
    """The processes of one run and what closes them; use as a context manager."""

    work_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    database: PrivateDatabase | None = None
    redis: PrivateRedis | None = None
    fake: FakeOpenAIThread | None = None
    bucket: str | None = None
    processes: list[CavernaProcess] = field(default_factory=list)
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        path = self.work_dir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def base_env(self) -> dict[str, str]:
        env = s3_environment()
        env.update(
            CAVERNA_DATA_DIR=str(self.work_dir / "data"),
            CAVERNA_SECRET_KEY=SECRET_KEY,
            CAVERNA_IMAGE_PROCESSES="0",
            CAVERNA_LOG_LEVEL="WARNING",
            CAVERNA_API_RATE_LIMIT="1000000/minute",
            PYTHONUNBUFFERED="1",
        )
        return env

    def on_close(self, closer: Callable[[], Any]) -> None:
        self._closers.append(closer)

    async def with_postgres(self) -> str:
        reason = await PrivateDatabase.probe()
        if reason is not None:
            raise ServiceMissing(reason)
        database = PrivateDatabase()
        await database.create()
        self.database = database
        self.on_close(lambda: database.drop())
        self.env["CAVERNA_DATABASE_URL"] = database.url
        return database.url

    def with_sqlite(self) -> str:
        url = f"sqlite+aiosqlite:///{self.work_dir / 'data' / 'caverna.db'}"
        self.env["CAVERNA_DATABASE_URL"] = url
        return url

    async def with_redis(self) -> PrivateRedis:
        redis = PrivateRedis(self.log_dir)
        self.on_close(redis.stop)
        redis.start()
        await redis.wait_ready()
        self.redis = redis
        self.env["CAVERNA_REDIS_URL"] = redis.url
        return redis

    def with_s3(self, endpoint: str, bucket: str) -> None:
        self.bucket = bucket
        self.env["CAVERNA_STORAGE_URL"] = f"s3://{bucket}?endpoint={endpoint}"

    def with_fake_openai(self) -> FakeOpenAIThread:
        fake = FakeOpenAIThread()
        self.on_close(fake.close)
        self.fake = fake
        self.env.update(OPENAI_API_KEY="sk-fake", OPENAI_BASE_URL=fake.base_url)
        return fake

    def caverna(self, name: str, role: str, **overrides: str) -> CavernaProcess:
        """A `caverna` process of this cluster (not started): role api, embedded or worker."""
        process = CavernaProcess(name, role, {**self.env, **overrides}, self.log_dir)
        self.processes.append(process)
        self.on_close(process.stop)
        return process

    async def start(self, *processes: CavernaProcess) -> None:
        for process in processes:
            process.start()
        await asyncio.gather(*(process.wait_ready() for process in processes))

    def logs(self) -> str:
        parts = [
            f"=== {p.name} (pid {p.process.pid if p.process else '-'})\n{p.log_tail()}"
            for p in self.processes
        ]
        if self.redis is not None:
            parts.append(f"=== redis\n{self.redis.log_tail(10)}")
        return "\n".join(parts)

    async def __aenter__(self) -> Self:
        self.env = self.base_env()
        return self

    async def __aexit__(self, kind: object, error: object, _tb: object) -> None:
        if error is not None:
            sys.stderr.write(f"\n--- logs of the cluster's processes ---\n{self.logs()}\n")
        for closer in reversed(self._closers):
            try:
                result = closer()
                if asyncio.iscoroutine(result):
                    await asyncio.wait_for(result, 30)
            except Exception as exc:  # one failed closer must not keep the others from running
                sys.stderr.write(f"cleanup step failed: {exc!r}\n")


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[MotoS3]:
    """A moto S3 server process for the block (started and ended by PID)."""
    server = MotoS3(log_dir)
    server.start()
    try:
        asyncio.run(server.wait_ready())
        yield server
    finally:
        server.stop()
