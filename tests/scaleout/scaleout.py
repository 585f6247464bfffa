"""The scale-out run: two API processes, two workers, PostgreSQL, Redis, S3 and a fake provider.

Shared by tests/scaleout/test_scaleout.py (which asserts on the `Outcome`) and
bench/scaleout.py (which prints its figures). Jobs are submitted across both API processes by
several users; meanwhile one image's events are followed through the API process that did
*not* accept it; then one key is driven over the per-key rate limit and one user over the
daily quota, alternating between the API processes, so only shared state can stop them.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.scaleout.harness import (
    Account,
    Answer,
    Cluster,
    JobRow,
    MotoS3,
    client_session,
    job_rows,
    provision,
    request,
    sse_statuses,
    status_counts,
    until,
)

USERS = 10
RATE_LIMIT = 400  # per key and minute: far above a load user's share, exact for the probe
RATE_OVERSHOOT = 12
DAILY_QUOTA = 15
QUOTA_OVERSHOOT = 4
CONCURRENCY = 32
WORKER_CONCURRENCY = 8
FOLLOWED_RENDER_SECONDS = 4.0


@dataclass
class Follow:
    """One image submitted through one API process and followed (SSE) through the other."""

    image_id: uuid.UUID
    accepted_by: int
    followed_on: int
    statuses: list[dict[str, Any]]


@dataclass
class Outcome:
    """What the run observed; the test asserts on it, the benchmark prints it."""

    jobs: int
    accepted: dict[uuid.UUID, int] = field(default_factory=dict)  # image -> API index
    submit_seconds: float = 0.0
    submit_latencies: list[float] = field(default_factory=list)
    drain_seconds: float = 0.0
    rows: list[JobRow] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=list)
    thumbnail_keys: list[str] = field(default_factory=list)
    follows: list[Follow] = field(default_factory=list)
    rate_statuses: list[int] = field(default_factory=list)
    rate_by_api: dict[int, list[int]] = field(default_factory=dict)
    quota_statuses: list[int] = field(default_factory=list)
    quota_codes: list[str] = field(default_factory=list)
    quota_by_api: dict[int, list[int]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)

    @property
    def submit_rate(self) -> float:
        return self.jobs / self.submit_seconds if self.submit_seconds else 0.0

    @property
    def throughput(self) -> float:
        total = self.submit_seconds + self.drain_seconds
        return len(self.accepted) / total if total else 0.0

    def figures(self) -> dict[str, float]:
        latencies = sorted(self.submit_latencies) or [0.0]
        return {
            "jobs": self.jobs,
            "submit_s": round(self.submit_seconds, 2),
            "submit_per_s": round(self.submit_rate, 1),
            "submit_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "submit_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1),
            "drain_after_submit_s": round(self.drain_seconds, 2),
            "completed_per_s": round(self.throughput, 1),
        }


async def run_scaleout(jobs: int, work_dir: Path, moto: MotoS3) -> Outcome:
    """Start the cluster, run the load and the probes, collect what the assertions need."""
    outcome = Outcome(jobs=jobs)
    async with Cluster(work_dir) as cluster:
        await cluster.with_postgres()
        await cluster.with_redis()
        cluster.with_s3(moto.endpoint, moto.create_bucket())
        cluster.with_fake_openai()
        cluster.env.update(
            CAVERNA_PROVIDERS="openai,preview",
            CAVERNA_API_RATE_LIMIT=f"{RATE_LIMIT}/minute",
            CAVERNA_WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
            CAVERNA_LEASE_SECONDS="15",
            # the followed images go to the preview, which takes this long and reports progress
            CAVERNA_PREVIEW_LATENCY_MS=str(int(FOLLOWED_RENDER_SECONDS * 1000)),
        )
        users = [f"user-{index:02d}" for index in range(USERS)]
        accounts = await provision(
            cluster.env, [*users, "probe", "quota"], quotas={"quota": DAILY_QUOTA}
        )
        apis = [cluster.caverna(f"api-{index}", "api") for index in (1, 2)]
        workers = [cluster.caverna(f"worker-{index}", "worker") for index in (1, 2)]
        await cluster.start(*apis, *workers)
        urls = [api.url for api in apis]
        load = [accounts[user] for user in users]
        async with client_session(CONCURRENCY * 2) as session:
            started = time.monotonic()
            await _submit(session, urls, load, jobs, outcome)
            outcome.submit_seconds = time.monotonic() - started
            # slow renders through the preview, so the streams see them run, then complete
            followers = [
                asyncio.create_task(_follow(session, urls, load[n], n, 1 - n, outcome))
                for n in (0, 1)
            ]
            await _rate_probe(session, urls, accounts["probe"], outcome)
            await _quota_probe(session, urls, accounts["quota"], outcome)
            drain_timeout = 60 + jobs * 0.1
            await asyncio.wait_for(asyncio.gather(*followers), drain_timeout)
            database_url = cluster.env["CAVERNA_DATABASE_URL"]
            expected = len(outcome.accepted)

            async def all_final() -> bool:
                counts = await status_counts(database_url)
                return counts.get("completed", 0) + counts.get("failed", 0) >= expected

            await until(all_final, drain_timeout, f"{expected} jobs to finish", interval=0.5)
            outcome.drain_seconds = time.monotonic() - started - outcome.submit_seconds
        outcome.rows = await job_rows(database_url)
        assert cluster.bucket is not None
        outcome.image_keys = moto.list_keys(cluster.bucket, "images/")
        outcome.thumbnail_keys = moto.list_keys(cluster.bucket, "thumbs/")
    return outcome


async def _submit(
    session: aiohttp.ClientSession,
    urls: list[str],
    accounts: list[Account],
    jobs: int,
    outcome: Outcome,
) -> None:
    """`jobs` distinct images (each its own seed), alternating API processes and users."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> None:
        api = index % len(urls)
        account = accounts[index % len(accounts)]
        async with gate:
            answer = await request(
                session,
                "POST",
                f"{urls[api]}/api/v1/images/generate",
                account,
                {"seed": 100_000 + index},
            )
        if answer.status != 202:
            outcome.unexpected.append(
                f"submit {index} via api-{api + 1}: {answer.status} {answer.body}"
            )
            return
        outcome.submit_latencies.append(answer.seconds)
        outcome.accepted[uuid.UUID(answer.body["image_id"])] = api

    await asyncio.gather(*(one(index) for index in range(jobs)))


async def _follow(
    session: aiohttp.ClientSession,
    urls: list[str],
    account: Account,
    accept_on: int,
    follow_on: int,
    outcome: Outcome,
) -> None:
    """Submit one image through one API process and follow its events on the other."""
    body = {"seed": accept_on, "provider": "preview"}
    answer = await request(
        session, "POST", f"{urls[accept_on]}/api/v1/images/generate", account, body
    )
    assert answer.status == 202, answer.body
    image_id = uuid.UUID(answer.body["image_id"])
    outcome.accepted[image_id] = accept_on
    statuses = await sse_statuses(
        session, f"{urls[follow_on]}{answer.body['events_url']}", account, timeout=300
    )
    outcome.follows.append(Follow(image_id, accept_on, follow_on, statuses))


async def _rate_probe(
    session: aiohttp.ClientSession, urls: list[str], account: Account, outcome: Outcome
) -> None:
    """RATE_LIMIT + RATE_OVERSHOOT requests of one key, alternating API processes."""
    gate = asyncio.Semaphore(8)
    missing = uuid.uuid4()

    async def one(index: int) -> None:
        api = index % len(urls)
        async with gate:
            answer = await request(
                session, "GET", f"{urls[api]}/api/v1/images/{missing}/status", account
            )
        outcome.rate_statuses.append(answer.status)
        outcome.rate_by_api.setdefault(api, []).append(answer.status)

    await asyncio.gather(*(one(index) for index in range(RATE_LIMIT + RATE_OVERSHOOT)))


async def _quota_probe(
    session: aiohttp.ClientSession, urls: list[str], account: Account, outcome: Outcome
) -> None:
    """DAILY_QUOTA + QUOTA_OVERSHOOT submissions of one user, one at a time, alternating."""
    for index, api in zip(
        range(DAILY_QUOTA + QUOTA_OVERSHOOT), itertools.cycle(range(len(urls))), strict=False
    ):
        answer: Answer = await request(
            session, "POST", f"{urls[api]}/api/v1/images/generate", account, {"seed": index}
        )
        outcome.quota_statuses.append(answer.status)
        outcome.quota_by_api.setdefault(api, []).append(answer.status)
        if answer.status == 202:
            outcome.accepted[uuid.UUID(answer.body["image_id"])] = api
        elif isinstance(answer.body, dict):
            outcome.quota_codes.append(str(answer.body.get("code")))
