"""Image history listing on a large account: first and deep pages, filters and text search.

Inserts 100,000 images for one user (and 10,000 spread over 20 other users) with real compiled
prompts, then times `ImageHistory.list_for_user` end to end (validation, SQL, rows to jobs):
the first page, and a deep page reached by a cursor in the middle of the matching rows, for each
case. Prints p50 and p99 per case with the query plan's index, on SQLite and, with
`--postgres URL` (loopback only), on a throwaway PostgreSQL database that is dropped afterwards.

    .venv/bin/python -m bench.bench_listing [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.bench_prompts import machine
from caverna.brand.registry import DEFAULT_PACK_ID, PackRegistry
from caverna.db.engine import TransactionRunner, create_engine, normalise_url
from caverna.db.image_search import FIRST_WINDOW, SqlImageSearch, search_statement
from caverna.db.migrate import upgrade
from caverna.domain.jobs import JobStatus
from caverna.domain.listing import ImageQuery, Position, encode_cursor
from caverna.domain.problems import InvalidParametersError
from caverna.prompting.engine import PromptEngine
from caverna.queue.sql import IMAGES
from caverna.services.images import ImageHistory

USER = "bench-user"
OTHER_USERS = 20
BATCH = 2_000
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
START = datetime(2025, 11, 1, tzinfo=UTC)
STATUS_WEIGHTS = {
    JobStatus.COMPLETED: 85,
    JobStatus.FAILED: 5,
    JobStatus.CANCELLED: 3,
    JobStatus.DELETED: 5,
    JobStatus.QUEUED: 2,
}
PROVIDERS = ("openai", "stability", "midjourney", "preview")


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled request, reused by many rows: the text a real history would hold."""

    params: dict[str, Any]
    params_hash: str
    template_version: str
    pack_version: str
    prompt: str
    negative_prompt: str | None
    provider: str


def templates(prompts: PromptEngine, count: int, rng: random.Random) -> list[Template]:
    pack = prompts.packs.get(DEFAULT_PACK_ID)
    poses, outfits, props = list(pack.poses), list(pack.outfits), list(pack.props)
    frames = list(pack.frames)
    found: list[Template] = []
    for _ in range(count * 40):
        if len(found) >= count:
            break
        if rng.random() < 0.25:
            raw: dict[str, Any] = {"frame": rng.choice(frames)}
        else:
            raw = {
                "pose": rng.choice(poses),
                "outfit": rng.choice(outfits),
                "props": rng.sample(props, rng.randint(0, 2)),
            }
        raw["seed"] = rng.randrange(1_000_000)
        provider = rng.choice(PROVIDERS)
        try:
            compiled = prompts.compile(raw, provider)
        except InvalidParametersError:
            continue  # a combination the pack's rules forbid
        found.append(
            Template(
                compiled.params,
                compiled.params_hash,
                compiled.template_version,
                compiled.pack_version,
                compiled.prompt,
                compiled.negative_prompt,
                provider,
            )
        )
    return found


def rows(
    user: str, count: int, pool: list[Template], rng: random.Random
) -> Iterator[dict[str, Any]]:
    statuses = list(STATUS_WEIGHTS)
    weights = list(STATUS_WEIGHTS.values())
    at = START
    for _ in range(count):
        at += timedelta(seconds=rng.choice((0, 1, 30, 90, 300)))  # some share a timestamp
        template = rng.choice(pool)
        params = template.params
        status = rng.choices(statuses, weights)[0]
        yield {
            "id": uuid.uuid4(),
            "user_id": user,
            "status": status.value,
            "params": params,
            "params_hash": template.params_hash,
            "pack_id": DEFAULT_PACK_ID,
            "pack_version": template.pack_version,
            "template_version": template.template_version,
            "frame_id": params["frame"],
            "pose": params["pose"],
            "outfit": params["outfit"],
            "footwear": params["footwear"],
            "props": ",".join(params["props"]),
            "provider": template.provider,
            "seed": params["seed"],
            "delivery_format": "webp",
            "prompt": template.prompt,
            "negative_prompt": template.negative_prompt,
            "progress": 1.0 if status is JobStatus.COMPLETED else 0.0,
            "attempts": 1,
            "max_attempts": 3,
            "storage_key": f"images/{uuid.uuid4().hex}.webp",
            "created_at": at,
            "next_attempt_at": at,
            "completed_at": at + timedelta(seconds=8) if status is JobStatus.COMPLETED else None,
            "deleted_at": at + timedelta(days=1) if status is JobStatus.DELETED else None,
        }


async def fill(
    db: TransactionRunner, images: int, prompts: PromptEngine
) -> tuple[list[Template], float]:
    rng = random.Random(7)
    pool = templates(prompts, 120, rng)
    sources = [rows(USER, images, pool, rng)]
    sources += [
        rows(f"other-{n}", images // 10 // OTHER_USERS, pool, rng) for n in range(OTHER_USERS)
    ]
    started = time.perf_counter()
    for source in sources:
        while batch := [row for _, row in zip(range(BATCH), source, strict=False)]:
            await db.write(lambda connection, b=batch: connection.execute(insert(IMAGES), b))  # type: ignore[misc]
    analyse = "ANALYZE" if db.engine.dialect.name == "sqlite" else "ANALYZE generated_images"
    await db.write(lambda connection: connection.execute(text(analyse)))
    return pool, time.perf_counter() - started


def cases(pool: list[Template]) -> dict[str, ImageQuery]:
    sample = pool[0]
    return {
        "all": ImageQuery(),
        "all, oldest first": ImageQuery(sort="oldest"),
        "status=failed": ImageQuery(statuses=(JobStatus.FAILED,)),
        "status=completed": ImageQuery(statuses=(JobStatus.COMPLETED,)),
        "pose": ImageQuery(pose="arms-crossed"),
        "prop": ImageQuery(prop="torch"),
        "frame": ImageQuery(frame="onboarding/training"),
        "provider": ImageQuery(provider="midjourney"),
        "pose+provider+status": ImageQuery(
            pose=sample.params["pose"],
            provider=sample.provider,
            statuses=(JobStatus.COMPLETED,),
        ),
        "one month": ImageQuery(
            created_after=START + timedelta(days=30), created_before=START + timedelta(days=60)
        ),
        "text, every row": ImageQuery(text="torch amber"),
        "text, one pose": ImageQuery(text="fingers spread"),
        "text, label pt-BR": ImageQuery(text="braços cruzados"),
        "text, no match": ImageQuery(text="zebra crossing"),
    }


async def deep_cursor(
    db: TransactionRunner, query: ImageQuery, history: ImageHistory
) -> str | None:
    """The cursor of the row in the middle of the matching rows (found once, not timed)."""
    matching = history.matching_options(query.text) if query.text else {}
    statement = search_statement(USER, query, matching).limit(None)

    def run(connection: Connection) -> Any:
        total = connection.execute(select(func.count()).select_from(statement.subquery())).scalar()
        if not total or total < 2 * query.limit:
            return None
        return connection.execute(statement.offset(int(total) // 2).limit(1)).first()

    row = await db.read(run)
    if row is None:
        return None
    return encode_cursor(Position(query.sort, row.created_at, row.id))


async def plan(db: TransactionRunner, query: ImageQuery, history: ImageHistory) -> str:
    """The index the planner picked and any sort, in a few words."""
    matching = history.matching_options(query.text) if query.text else {}
    postgres = db.engine.dialect.name == "postgresql"
    windowed = postgres and (query.text is not None or query.prop is not None)
    statement = search_statement(USER, query, matching, window=FIRST_WINDOW if windowed else None)

    def run(connection: Connection) -> list[str]:
        compiled = statement.compile(connection, compile_kwargs={"literal_binds": True})
        prefix = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
        return [str(r[-1]) for r in connection.exec_driver_sql(prefix + str(compiled)).all()]

    lines = await db.read(run)
    words = {word for line in lines for word in line.replace("(", " ").split()}
    found = ",".join(sorted(word for word in words if word.startswith("ix_"))) or "seq scan"
    if any("RIGHT PART OF ORDER BY" in line or "Incremental Sort" in line for line in lines):
        found += " +sort of ties"
    elif any("TEMP B-TREE FOR ORDER BY" in line or "Sort  (" in line for line in lines):
        found += " +sort"
    return found + (" (windows)" if windowed else "")


async def timed(action: Callable[[], Any], repeat: int, budget: float) -> list[float]:
    for _ in range(3):
        await action()
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while len(samples) < repeat and (len(samples) < 10 or time.perf_counter() < deadline):
        start = time.perf_counter_ns()
        await action()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(url: str, label: str, images: int, repeat: int, budget: float) -> None:
    engine: AsyncEngine = create_engine(url)
    db = TransactionRunner(engine)
    search = SqlImageSearch(engine)
    prompts = PromptEngine(PackRegistry())
    history = ImageHistory(search, prompts)
    try:
        pool, seconds = await fill(db, images, prompts)
        total = images + images // 10
        print(f"\n{label}: inserted {total:,} images in {seconds:.1f} s")
        print(f"{'case':<24} {'page':<6} {'rows':>4} {'p50 ms':>8} {'p99 ms':>8} {'n':>4}  plan")
        for name, query in cases(pool).items():
            cursor = await deep_cursor(db, query, history)
            pages = [("first", query)]
            if cursor is not None:
                pages.append(("deep", replace(query, cursor=cursor)))
            for page_name, page_query in pages:
                found = await history.list_for_user(USER, page_query)
                samples = await timed(
                    lambda q=page_query: history.list_for_user(USER, q),  # type: ignore[misc]
                    repeat,
                    budget,
                )
                print(
                    f"{name:<24} {page_name:<6} {len(found.items):>4} {p(samples, 0.5):>8.2f} "
                    f"{p(samples, 0.99):>8.2f} {len(samples):>4}  "
                    f"{await plan(db, page_query, history)}"
                )
    finally:
        search.close()
        db.close()
        await engine.dispose()


async def with_postgres(admin_url: str, images: int, repeat: int, budget: float) -> None:
    parsed = make_url(normalise_url(admin_url))
    if parsed.host not in LOOPBACK:
        raise SystemExit(f"--postgres must point at loopback, not {parsed.host}")
    name = f"caverna_bench_{uuid.uuid4().hex[:8]}"
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        url = parsed.set(database=name).render_as_string(hide_password=False)
        await upgrade(url)
        await run(url, "PostgreSQL", images, repeat, budget)
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100_000, help="images of the main user")
    parser.add_argument("--repeat", type=int, default=200, help="samples per case at most")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per case at most")
    parser.add_argument("--postgres", metavar="URL", help="also run on PostgreSQL (loopback)")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="caverna-bench-") as folder:
            url = f"sqlite+aiosqlite:///{Path(folder) / 'caverna.db'}"
            asyncio.run(upgrade(url))
            asyncio.run(run(url, "SQLite", args.images, args.repeat, args.budget))
    if args.postgres:
        asyncio.run(with_postgres(args.postgres, args.images, args.repeat, args.budget))


if __name__ == "__main__":
    main()
