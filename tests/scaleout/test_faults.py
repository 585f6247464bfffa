"""Faults under load, with real processes on loopback: each test is bounded (well under a minute).

- a `caverna worker` SIGKILLed mid-load, and an embedded `caverna serve` SIGKILLed mid-load:
  after a restart every job completes, the killed process's jobs on a second attempt, with no
  duplicate rows or objects;
- the run's PostgreSQL database refusing connections (its backends terminated): API requests
  get 503 problem+json, not 500 and not a hang, and everything recovers by itself;
- the private Redis stopped: rate-limited routes answer 503, and recover once it is back;
- the S3 server unreachable while jobs complete: they retry and complete once it is back, and
  the bucket holds exactly the rows' objects;
- a provider that hangs: the per-call timeout fires, its breaker opens (as the providers health
  API shows), and jobs fail over to the next provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.openai_server import slow
from tests.scaleout.harness import (
    Account,
    Answer,
    Cluster,
    JobRow,
    MotoS3,
    TcpProxy,
    client_session,
    job_rows,
    provision,
    request,
    until,
)

PROBLEM_JSON = "application/problem+json"
JOB_TIMEOUT = 45.0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as client:
        yield client


async def submit(
    session: aiohttp.ClientSession, url: str, account: Account, count: int, first_seed: int = 0
) -> list[uuid.UUID]:
    """`count` distinct images through one API process, all of which must be accepted."""

    async def one(seed: int) -> uuid.UUID:
        answer = await request(
            session, "POST", f"{url}/api/v1/images/generate", account, {"seed": seed}
        )
        assert answer.status == 202, answer.body
        return uuid.UUID(answer.body["image_id"])

    return list(await asyncio.gather(*(one(first_seed + n) for n in range(count))))


RowsCheck = Callable[[list[JobRow]], bool]


async def wait_rows(
    database_url: str, what: str, check: RowsCheck, timeout: float = JOB_TIMEOUT
) -> list[JobRow]:
    """Until `check(rows)` holds; returns the rows that satisfied it."""
    found: list[JobRow] = []

    async def ready() -> bool:
        nonlocal found
        found = await job_rows(database_url)
        return check(found)

    await until(ready, timeout, what, interval=0.2)
    return found


def all_completed(expected: int) -> RowsCheck:
    return lambda rows: len(rows) >= expected and all(r.status == "completed" for r in rows)


def assert_objects_match_rows(rows: list[JobRow], images: list[str], thumbs: list[str]) -> None:
    """Exactly one image per completed row, and no object (image or thumbnail) without a row.

    Thumbnails may be made after completion, so only their keys are checked, not their count.
    """
    assert images == sorted(str(row.storage_key) for row in rows)
    assert set(thumbs) <= {str(row.thumbnail_key) for row in rows}


def local_keys(media: Path, prefix: str) -> list[str]:
    """Keys of the local store: visible files only (a crash may leave a hidden temporary)."""
    root = media / prefix
    return sorted(
        path.relative_to(media).as_posix()
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    )


def assert_problem(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer.body
    assert answer.content_type == PROBLEM_JSON, answer.content_type
    assert isinstance(answer.body, dict)
    assert answer.body["code"] == code, answer.body
    assert answer.body["status"] == status


async def scale_out(cluster: Cluster, moto: MotoS3, endpoint: str | None = None) -> str:
    """PostgreSQL, a bucket, the offline preview with a render time: the base of these tests."""
    database_url = await cluster.with_postgres()
    cluster.with_s3(endpoint or moto.endpoint, moto.create_bucket())
    cluster.env.update(
        CAVERNA_PROVIDERS="preview",
        CAVERNA_PREVIEW_LATENCY_MS="400",
        CAVERNA_LEASE_SECONDS="2",
        CAVERNA_WORKER_CONCURRENCY="4",
    )
    return database_url


# --- process crashes ----------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres_ready")
async def test_sigkilled_worker_mid_load_loses_and_duplicates_nothing(
    moto: MotoS3, work_dir: Path, session: aiohttp.ClientSession
) -> None:
    async with Cluster(work_dir) as cluster:
        database_url = await scale_out(cluster, moto)
        account = (await provision(cluster.env, ["ana"]))["ana"]
        api = cluster.caverna("api", "api")
        victim, other = cluster.caverna("worker-1", "worker"), cluster.caverna("worker-2", "worker")
        await cluster.start(api, victim, other)
        jobs = await submit(session, api.url, account, 30)

        marker = f"-{victim.pid}-"
        rows = await wait_rows(
            database_url,
            "the first worker to hold jobs after others completed",
            lambda rows: (
                any(r.status == "completed" for r in rows)
                and any(r.status == "processing" and marker in str(r.lease_owner) for r in rows)
            ),
        )
        victim.kill()
        after = {r.id: r for r in await job_rows(database_url)}
        held = {r.id for r in rows if r.status == "processing" and marker in str(r.lease_owner)}
        stranded = {i for i in held if after[i].status == "processing"}
        assert stranded, "the killed worker held no job at its death"
        victim.start()
        await victim.wait_ready()

        rows = await wait_rows(database_url, "every job to complete", all_completed(len(jobs)))
        assert sorted(r.id for r in rows) == sorted(jobs)
        by_id = {r.id: r for r in rows}
        # found again and finished on a later attempt (exactly once: see the objects below)
        assert all(by_id[i].attempts >= 2 for i in stranded)
        assert all(r.attempts >= 1 for r in rows)
        assert cluster.bucket is not None
        assert_objects_match_rows(
            rows,
            moto.list_keys(cluster.bucket, "images/"),
            moto.list_keys(cluster.bucket, "thumbs/"),
        )


async def test_sigkilled_embedded_server_mid_load_finishes_every_job_after_restart(
    work_dir: Path, session: aiohttp.ClientSession
) -> None:
    async with Cluster(work_dir) as cluster:
        database_url = cluster.with_sqlite()
        cluster.env.update(
            CAVERNA_PREVIEW_LATENCY_MS="400",
            CAVERNA_LEASE_SECONDS="2",
            CAVERNA_WORKER_CONCURRENCY="4",
        )
        account = (await provision(cluster.env, ["ana"]))["ana"]
        server = cluster.caverna("embedded", "embedded")
        await cluster.start(server)
        jobs = await submit(session, server.url, account, 30)
        rows = await wait_rows(
            database_url,
            "some jobs completed and some in hand",
            lambda rows: (
                any(r.status == "completed" for r in rows)
                and any(r.status == "processing" for r in rows)
            ),
        )
        server.kill()
        stranded = {r.id for r in await job_rows(database_url) if r.status == "processing"}
        assert stranded
        server.start()  # same data folder, same port
        await server.wait_ready()

        rows = await wait_rows(database_url, "every job to complete", all_completed(len(jobs)))
        assert sorted(r.id for r in rows) == sorted(jobs)
        by_id = {r.id: r for r in rows}
        assert all(by_id[i].attempts >= 2 for i in stranded)
        media = work_dir / "data" / "media"
        assert_objects_match_rows(rows, local_keys(media, "images"), local_keys(media, "thumbs"))
        status = await request(
            session, "GET", f"{server.url}/api/v1/images/{jobs[0]}/status", account
        )
        assert status.status == 200
        assert status.body["status"] == "completed"


# --- shared services going away -----------------------------------------------------------------


@pytest.mark.usefixtures("postgres_ready")
async def test_database_outage_answers_503_and_recovers_by_itself(
    moto: MotoS3, work_dir: Path, session: aiohttp.ClientSession
) -> None:
    async with Cluster(work_dir) as cluster:
        database_url = await scale_out(cluster, moto)
        cluster.env["CAVERNA_PREVIEW_LATENCY_MS"] = "200"
        account = (await provision(cluster.env, ["ana"]))["ana"]
        api, worker = cluster.caverna("api", "api"), cluster.caverna("worker", "worker")
        await cluster.start(api, worker)
        accepted: list[uuid.UUID] = []
        answers: list[int] = []
        stop = asyncio.Event()

        async def steady_load() -> None:
            seed = 0
            while not stop.is_set():
                seed += 1
                answer = await request(
                    session, "POST", f"{api.url}/api/v1/images/generate", account, {"seed": seed}
                )
                answers.append(answer.status)
                if answer.status == 202:
                    accepted.append(uuid.UUID(answer.body["image_id"]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)

        load = asyncio.create_task(steady_load())
        try:

            async def some_accepted() -> bool:
                return len(accepted) >= 10

            await until(some_accepted, 30, "ten images accepted before the outage")
            first = accepted[0]
            assert cluster.database is not None
            await cluster.database.block()
            try:
                for _ in range(3):  # while it lasts: clean 503s, quickly
                    status = await request(
                        session,
                        "GET",
                        f"{api.url}/api/v1/images/{first}/status",
                        account,
                        timeout=15,
                    )
                    assert_problem(status, 503, "database_unavailable")
                    assert status.seconds < 10
                    generate = await request(
                        session,
                        "POST",
                        f"{api.url}/api/v1/images/generate",
                        account,
                        {"seed": 999_999},
                        timeout=15,
                    )
                    assert_problem(generate, 503, "database_unavailable")
                    assert generate.headers["Retry-After"].isdigit()
            finally:
                await cluster.database.unblock()

            async def answers_again() -> bool:
                status = await request(
                    session, "GET", f"{api.url}/api/v1/images/{first}/status", account
                )
                return status.status == 200

            await until(answers_again, 20, "the API to answer again after the outage")
            count = len(accepted)

            async def accepting_again() -> bool:
                return len(accepted) >= count + 5

            await until(accepting_again, 20, "new images accepted after the outage")
        finally:
            stop.set()
            await load
        assert set(answers) <= {202, 503}, Counter(answers)
        assert 503 in answers
        assert api.alive  # recovered without a restart
        assert worker.alive
        rows = await wait_rows(database_url, "every job to complete", all_completed(len(accepted)))
        assert set(accepted) <= {r.id for r in rows}
        assert cluster.bucket is not None
        assert_objects_match_rows(
            rows,
            moto.list_keys(cluster.bucket, "images/"),
            moto.list_keys(cluster.bucket, "thumbs/"),
        )


@pytest.mark.usefixtures("postgres_ready")
async def test_lease_renewals_outlive_a_database_outage_during_a_long_render(
    moto: MotoS3, work_dir: Path, session: aiohttp.ClientSession
) -> None:
    """Renewals that fail while the database is away must go on once it is back: a lease
    left to run out mid-render is swept, and the job claimed (and paid for) a second time."""
    async with Cluster(work_dir) as cluster:
        database_url = await scale_out(cluster, moto)
        fake = cluster.with_fake_openai()
        # renewed every 2 s (and sooner after a failure): the lease holds 6 s, the outage below
        # costs at least one renewal, the render outlasts both
        cluster.env.update(CAVERNA_PROVIDERS="openai", CAVERNA_LEASE_SECONDS="6")
        fake.script(lambda server: setattr(server, "latency", 11.0))
        account = (await provision(cluster.env, ["ana"]))["ana"]
        api, worker = cluster.caverna("api", "api"), cluster.caverna("worker", "worker")
        await cluster.start(api, worker)
        jobs = await submit(session, api.url, account, 2)

        def generations() -> int:
            return sum(r.path.endswith("/images/generations") for r in fake.fake.requests)

        async def rendering() -> bool:
            return generations() == len(jobs)

        await until(rendering, 20, "both renders to start")
        assert cluster.database is not None
        await cluster.database.block()
        await asyncio.sleep(2.5)  # longer than a renewal interval: the outage is the test
        await cluster.database.unblock()
        before = {r.id: r.lease_expires_at for r in await job_rows(database_url)}

        def renewed(rows: list[JobRow]) -> bool:
            return all(
                (after := row.lease_expires_at) is not None
                and (earlier := before[row.id]) is not None
                and after > earlier
                for row in rows
            )

        # well before the renders end, so a renewer that gave up cannot pass by completing
        await wait_rows(database_url, "the leases to be renewed after the outage", renewed, 3.5)

        rows = await wait_rows(database_url, "both jobs to complete", all_completed(len(jobs)))
        assert [r.attempts for r in rows] == [1, 1]
        assert generations() == len(jobs)  # no render was started twice
        assert worker.alive


@pytest.mark.usefixtures("redis_ready")
async def test_redis_stopped_rate_limited_routes_answer_503_then_recover(
    work_dir: Path, session: aiohttp.ClientSession
) -> None:
    async with Cluster(work_dir) as cluster:
        database_url = cluster.with_sqlite()
        redis = await cluster.with_redis()
        # renders in flight while Redis is away: the workers do not need it
        cluster.env.update(CAVERNA_PREVIEW_LATENCY_MS="600", CAVERNA_API_RATE_LIMIT="600/minute")
        account = (await provision(cluster.env, ["ana"]))["ana"]
        server = cluster.caverna("embedded", "embedded")
        await cluster.start(server)
        jobs = await submit(session, server.url, account, 10)
        pid = server.pid

        redis.stop()
        status_url = f"{server.url}/api/v1/images/{jobs[0]}/status"
        for _ in range(3):
            answer = await request(session, "GET", status_url, account, timeout=15)
            assert_problem(answer, 503, "unavailable")
            assert answer.seconds < 5
        refused = await request(
            session, "POST", f"{server.url}/api/v1/images/generate", account, {"seed": 77}
        )
        assert_problem(refused, 503, "unavailable")

        redis.start()  # the same port
        await redis.wait_ready()

        async def answers_again() -> bool:
            return (await request(session, "GET", status_url, account)).status == 200

        await until(answers_again, 20, "rate-limited routes to answer again")
        assert server.pid == pid  # the same process: recovered without a restart
        assert server.alive
        more = await submit(session, server.url, account, 5, first_seed=100)
        rows = await wait_rows(database_url, "every job to complete", all_completed(15))
        assert sorted(r.id for r in rows) == sorted(jobs + more)  # the refused one made no row


@pytest.mark.usefixtures("postgres_ready")
async def test_storage_unreachable_during_completion_jobs_retry_and_complete(
    moto: MotoS3, work_dir: Path, session: aiohttp.ClientSession
) -> None:
    proxy = TcpProxy(moto.port)
    proxy.restore()
    try:
        async with Cluster(work_dir) as cluster:
            database_url = await scale_out(cluster, moto, endpoint=proxy.endpoint)
            cluster.env.update(
                CAVERNA_MAX_ATTEMPTS="10",
                CAVERNA_LEASE_SECONDS="5",
                CAVERNA_PREVIEW_LATENCY_MS="300",
                # waited out within the job for 1 s, so the longer cut below costs attempts
                CAVERNA_STORAGE_RETRY_SECONDS="1",
            )
            account = (await provision(cluster.env, ["ana"]))["ana"]
            api, worker = cluster.caverna("api", "api"), cluster.caverna("worker", "worker")
            await cluster.start(api, worker)
            jobs = await submit(session, api.url, account, 24)
            await wait_rows(
                database_url,
                "the first completions",
                lambda rows: any(r.status == "completed" for r in rows),
            )
            proxy.cut()
            try:
                await wait_rows(
                    database_url,
                    "a completion to fail on the storage",
                    lambda rows: any(r.error_code == "storage_unavailable" for r in rows),
                    timeout=30,
                )
            finally:
                proxy.restore()
            rows = await wait_rows(database_url, "every job to complete", all_completed(len(jobs)))
            assert sorted(r.id for r in rows) == sorted(jobs)
            assert any(r.attempts >= 2 for r in rows)  # the storage failure cost an attempt
            assert cluster.bucket is not None
            assert_objects_match_rows(
                rows,
                moto.list_keys(cluster.bucket, "images/"),
                moto.list_keys(cluster.bucket, "thumbs/"),
            )
    finally:
        proxy.close()


# --- a provider that hangs ----------------------------------------------------------------------

BREAKER_FAILURES = 3


async def test_hanging_provider_times_out_opens_its_breaker_and_fails_over(
    work_dir: Path, session: aiohttp.ClientSession
) -> None:
    async with Cluster(work_dir) as cluster:
        database_url = cluster.with_sqlite()
        fake = cluster.with_fake_openai()
        cluster.env.update(
            CAVERNA_PROVIDERS="openai,preview",
            CAVERNA_PROVIDER_TIMEOUT_SECONDS="1",
            CAVERNA_PROVIDER_RETRIES="0",
            CAVERNA_BREAKER_FAILURES=str(BREAKER_FAILURES),
            CAVERNA_BREAKER_OPEN_SECONDS="120",
            CAVERNA_WORKER_CONCURRENCY="2",
        )
        fake.script(lambda server: server.fail_next(*[slow(60)] * 40))
        account = (await provision(cluster.env, ["ana"]))["ana"]
        server = cluster.caverna("embedded", "embedded")
        await cluster.start(server)
        jobs = await submit(session, server.url, account, 8)

        rows = await wait_rows(database_url, "every job to complete", all_completed(len(jobs)))
        assert {r.provider for r in rows} == {"preview"}
        first_tries = Counter(
            (r.attempt_log[0]["provider"], r.attempt_log[0]["outcome"]) for r in rows
        )
        assert first_tries[("openai", "timeout")] >= BREAKER_FAILURES
        assert first_tries[("openai", "provider_down")] >= 1  # refused by the open breaker
        assert all(r.attempt_log[-1]["provider"] == "preview" for r in rows)
        assert all(r.attempt_log[-1]["outcome"] == "ok" for r in rows)
        calls = len([r for r in fake.fake.requests if r.path.endswith("/images/generations")])
        assert BREAKER_FAILURES <= calls < len(jobs)  # the open breaker spared the provider

        fake.script(lambda server: server.script.clear())
        health = await request(session, "GET", f"{server.url}/api/v1/providers/health", account)
        assert health.status == 200
        breakers = {row["provider"]: row["breaker"] for row in health.body}
        assert breakers == {"openai": "open", "preview": "closed"}
