"""Quotas held by the insert itself, on SQLite and PostgreSQL: two runtimes (as two API processes
would have) over one database, submitting at once, never take a user past a limit.

The early check (`Quotas.check`) reads usage before the insert, so concurrent submits all pass
it; what stops them is the count made inside the insert's transaction, serialised per user.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from caverna.bootstrap import Runtime, build_container, open_runtime
from caverna.config import Settings
from caverna.domain.jobs import CompletedImage
from caverna.providers.preview import PreviewProvider
from caverna.queue.base import UsageGate
from caverna.queue.sql import quota_lock_key
from caverna.services.generation import SubmitResult
from caverna.services.quotas import QuotaExceeded, day_start, month_start, next_month
from caverna.storage.memory import MemoryStore

FRAME = {"frame": "onboarding/lighting-the-torch"}
USER = "ana"
DAILY = 15
SUBMITS = 40


@contextlib.asynccontextmanager
async def two_runtimes(
    database_url: str, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    options = Settings(database_url=database_url, data_dir=tmp_path, image_processes=0, **settings)
    container = build_container(options)
    first = await open_runtime(
        container, providers={"preview": PreviewProvider()}, store=MemoryStore()
    )
    try:
        second = await open_runtime(
            container, providers={"preview": PreviewProvider()}, store=MemoryStore()
        )
        try:
            await first.accounts.create_key(USER, actor="test")
            yield first, second
        finally:
            await second.aclose()
    finally:
        await first.aclose()


async def race(
    runtimes: Sequence[Runtime], submits: int, images: int = 1
) -> list[SubmitResult | QuotaExceeded]:
    """`submits` single-image submits split across the runtimes. Each passes the early check
    first and only then are all released at once: the check-then-insert race at its worst."""
    barrier = asyncio.Barrier(submits)

    async def one(index: int) -> SubmitResult | QuotaExceeded:
        runtime = runtimes[index % len(runtimes)]
        checked: QuotaExceeded | None = None
        try:
            await runtime.quotas.check(USER, images)
        except QuotaExceeded as exc:
            checked = exc
        await barrier.wait()
        if checked is not None:
            return checked
        try:
            return await runtime.generation.submit(USER, {**FRAME, "seed": 1000 + index})
        except QuotaExceeded as exc:
            return exc

    return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(submits))), 120)


def tomorrow(now: datetime) -> datetime:
    return day_start(now) + timedelta(days=1)


async def test_concurrent_submits_through_two_runtimes_stop_exactly_at_the_daily_limit(
    database_url: str, tmp_path: Path
) -> None:
    async with two_runtimes(database_url, tmp_path, quota_daily_images=DAILY) as runtimes:
        first, _ = runtimes
        outcomes = await race(runtimes, SUBMITS)
        accepted = [o for o in outcomes if isinstance(o, SubmitResult)]
        refused = [o for o in outcomes if isinstance(o, QuotaExceeded)]
        assert len(accepted) == DAILY
        assert len(refused) == SUBMITS - DAILY
        assert not any(result.reused for result in accepted)
        assert len({result.job.id for result in accepted}) == DAILY
        now = first.clock()
        for exc in refused:
            assert (exc.kind, exc.limit, exc.used) == ("daily_images", DAILY, DAILY)
            assert exc.resets_at == tomorrow(now)
            assert (exc.user_id, exc.asked) == (USER, 1)
        assert await first.jobs.usage(USER, day_start(now)) == (DAILY, 0.0)
        assert (await first.jobs.counts())["queued"] == DAILY


async def test_a_sequence_that_would_cross_the_limit_inserts_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with two_runtimes(database_url, tmp_path, quota_daily_images=DAILY) as (first, second):
        for seed in range(10):
            await (first, second)[seed % 2].generation.submit(USER, {**FRAME, "seed": seed})
        with pytest.raises(QuotaExceeded) as refused:
            await second.generation.submit_sequence(USER, "onboarding", {"seed": 5})
        assert (refused.value.kind, refused.value.used, refused.value.asked) == (
            "daily_images",
            10,
            8,
        )
        assert (await first.jobs.counts())["queued"] == 10
        assert await first.jobs.recent_sequences(USER, 5) == []  # no run row either
        # eight frames fit exactly into a limit of eighteen: the limit itself may be reached
        await first.accounts.set_quota(USER, daily_images=18, monthly_usd=None, actor="test")
        run = await second.generation.submit_sequence(USER, "onboarding", {"seed": 5})
        assert len(run.jobs) == 8
        assert (await first.jobs.counts())["queued"] == 18


def finished(cost_usd: float) -> CompletedImage:
    return CompletedImage(
        model="m",
        prompt="p",
        negative_prompt=None,
        storage_key="images/x.webp",
        thumbnail_key="thumbs/x.webp",
        content_type="image/webp",
        width=8,
        height=8,
        bytes=10,
        sha256="0" * 64,
        cost_usd=cost_usd,
        provider_latency_ms=1.0,
        seed=1,
        provider="preview",
        attempt_log=[{"provider": "preview", "outcome": "ok"}],
    )


async def test_the_monthly_spend_is_held_by_the_insert_too(
    database_url: str, tmp_path: Path
) -> None:
    async with two_runtimes(database_url, tmp_path, quota_monthly_usd=0.05) as runtimes:
        first, second = runtimes
        await first.generation.submit(USER, {**FRAME, "seed": 1})  # its cost is not known yet
        await second.quotas.check(USER)  # nothing spent: the early check lets the next one by
        claimed = await first.jobs.claim("worker", 30.0)
        assert claimed is not None
        # ... and meanwhile the first image is made, for the whole month's budget
        assert await first.jobs.complete(claimed.id, "worker", finished(0.05))
        with pytest.raises(QuotaExceeded) as refused:
            await second.generation.submit(USER, {**FRAME, "seed": 2})
        now = second.clock()
        exc = refused.value
        assert (exc.kind, exc.limit, exc.used, exc.resets_at) == (
            "monthly_usd",
            0.05,
            0.05,
            next_month(now),
        )
        outcomes = await race(runtimes, SUBMITS)
        assert all(isinstance(o, QuotaExceeded) and o.kind == "monthly_usd" for o in outcomes)
        assert await first.jobs.usage(USER, month_start(now)) == (1, 0.05)


async def test_a_reused_image_counts_nothing_and_a_user_without_limits_is_not_gated(
    database_url: str, tmp_path: Path
) -> None:
    async with two_runtimes(database_url, tmp_path, quota_daily_images=1) as (first, second):
        original = await first.generation.submit(USER, {**FRAME, "seed": 3})
        again = await second.generation.submit(USER, {**FRAME, "seed": 3})
        assert again.reused
        assert again.job.id == original.job.id
        with pytest.raises(QuotaExceeded):
            await second.generation.submit(USER, {**FRAME, "seed": 4})
        assert (await first.jobs.counts())["queued"] == 1

        await first.accounts.create_key("bob", actor="test")
        await first.accounts.set_quota("ana", daily_images=None, monthly_usd=None, actor="test")
        assert await first.quotas.gate("ana", 1) is not None  # the configured default applies
        # a user whose limits are lifted altogether inserts with no lock and no count
        unlimited = Settings(database_url=database_url, data_dir=tmp_path, image_processes=0)
        free = await open_runtime(
            build_container(unlimited),
            providers={"preview": PreviewProvider()},
            store=MemoryStore(),
        )
        try:
            assert await free.quotas.gate("bob", 1000) is None
            gates: list[UsageGate | None] = []
            store_insert = free.jobs.insert

            async def watched(
                jobs: Sequence[dict[str, Any]],
                sequence: dict[str, Any] | None,
                gate: UsageGate | None = None,
            ) -> None:
                gates.append(gate)
                await store_insert(jobs, sequence, gate)

            free.jobs.insert = watched  # type: ignore[method-assign]
            await free.generation.submit("bob", {**FRAME, "seed": 9})
            assert gates == [None]
        finally:
            await free.aclose()


def test_the_lock_key_is_a_stable_signed_64_bit_number_per_user() -> None:
    keys = {quota_lock_key(f"user-{n}") for n in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= key < 2**63 for key in keys)
    # processes of two releases share the lock during a rolling upgrade: the key must not move
    assert quota_lock_key("ana") == 3812945514247222638
    assert quota_lock_key("ana") != quota_lock_key("bob")


async def test_a_reroll_row_is_inserted_with_its_lineage(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with two_runtimes(
        database_url, tmp_path, reroll_below=0.99, reroll_max_attempts=2, quota_daily_images=2
    ) as (runtime, _):
        original = await runtime.generation.submit(USER, {**FRAME, "seed": 77})
        inserted: list[dict[str, Any]] = []
        store_insert = runtime.jobs.insert

        async def watched(
            jobs: Sequence[dict[str, Any]],
            sequence: dict[str, Any] | None,
            gate: UsageGate | None = None,
        ) -> None:
            await store_insert(jobs, sequence, gate)
            inserted.extend(jobs)  # only what the store accepted

        async def no_second_write(*_args: object) -> bool:
            raise AssertionError("the lineage must be written by the insert, not afterwards")

        monkeypatch.setattr(runtime.jobs, "insert", watched)
        monkeypatch.setattr(runtime.jobs, "set_reroll", no_second_write)
        assert runtime.consistency is not None
        assert runtime.consistency.rerolls is not None
        rerolls = runtime.consistency.rerolls
        decision = await rerolls.after_report(original.job, 0.1)
        assert decision.action == "rerolled"
        (row,) = inserted
        assert (row["reroll_of"], row["reroll_attempt"]) == (original.job.id, 1)
        (attempt,) = await runtime.jobs.rerolls(original.job.id)
        assert attempt.id == decision.new_job
        assert (attempt.reroll_of, attempt.reroll_attempt) == (original.job.id, 1)
        # the second attempt would be the user's third image today: the insert refuses it
        stopped = await rerolls.after_report(attempt, 0.1)
        assert stopped.action == "stopped"
        assert "quota" in stopped.reason
        assert len(inserted) == 1
        assert len(await runtime.jobs.rerolls(original.job.id)) == 1


async def test_the_insert_reuses_the_limits_its_early_check_just_read(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with two_runtimes(database_url, tmp_path, quota_daily_images=DAILY) as (runtime, _):
        await runtime.accounts.create_key("bob", actor="test")
        reads: list[str] = []
        get_user = runtime.accounts.get_user

        async def counted(user_id: str) -> Any:
            reads.append(user_id)
            return await get_user(user_id)

        monkeypatch.setattr(runtime.accounts, "get_user", counted)
        await runtime.quotas.check(USER)
        await runtime.generation.submit(USER, {**FRAME, "seed": 1})
        assert reads == [USER]  # one read of the limits for the check and the insert
        await runtime.generation.submit(USER, {**FRAME, "seed": 2})
        assert reads == [USER, USER]  # taken once: a later insert reads them again
        await runtime.quotas.check(USER)
        await runtime.generation.submit("bob", {**FRAME, "seed": 3})
        assert reads == [USER, USER, USER, "bob"]  # another user's insert never borrows them
