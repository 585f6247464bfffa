"""JobStore on SQLAlchemy: one implementation for SQLite (embedded) and PostgreSQL (scale-out).

The claim is one `UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING` statement. On SQLite
every transaction starts with BEGIN IMMEDIATE (see caverna.db.engine), so two claimers queue on
the write lock and never take the same row; on PostgreSQL the sub-select adds
`FOR UPDATE SKIP LOCKED`, so concurrent claimers skip each other's rows instead of waiting.
Idle workers are woken in-process by an event and, on PostgreSQL, across processes by
LISTEN/NOTIFY; a poll interval bounds the wait for anything else (another process on SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    Table,
    bindparam,
    case,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.engine import TransactionRunner
from caverna.db.models import ImageRow, SequenceRow
from caverna.db.point_reads import PointRead
from caverna.db.types import UTCDateTime
from caverna.domain.jobs import (
    CompletedImage,
    ImageJob,
    JobErrorCode,
    JobStatus,
    SequenceRun,
    SweepResult,
)
from caverna.queue.base import (
    DERIVATIVES_DONE,
    DERIVATIVES_FAILED,
    DERIVATIVES_PENDING,
    QueueBacklog,
    UsageGate,
)

NOTIFY_CHANNEL = "caverna_jobs"
IMAGES: Table = ImageRow.__table__  # type: ignore[assignment]
SEQUENCES: Table = SequenceRow.__table__  # type: ignore[assignment]
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(ImageJob))
_RUN_COLUMNS = tuple(SEQUENCES.c[f.name] for f in dataclasses.fields(SequenceRun))


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_job(row: Any) -> ImageJob:
    values = {name: getattr(row, name) for name in _JOB_FIELDS}
    values["status"] = JobStatus(row.status)
    return ImageJob(**values)


def job_from(values: Mapping[str, Any]) -> ImageJob:
    fields = {name: values[name] for name in _JOB_FIELDS}
    fields["status"] = JobStatus(fields["status"])
    return ImageJob(**fields)


# the two reads a status poll makes, compiled once (see caverna.db.point_reads)
JOB_BY_ID = PointRead(select(IMAGES).where(IMAGES.c.id == bindparam("id")))
QUEUED_AHEAD = PointRead(
    select(func.count().label("ahead")).where(
        IMAGES.c.status == JobStatus.QUEUED.value,
        IMAGES.c.next_attempt_at < bindparam("before", type_=UTCDateTime()),
    )
)


def claim_statement(
    worker_id: str, now: datetime, lease_until: datetime, providers: Sequence[str] | None
) -> Any:
    """The atomic claim, as a statement (tests EXPLAIN it on each backend)."""
    return _claim(
        bindparam("worker_id", worker_id, type_=String()),
        bindparam("now", now, type_=UTCDateTime()),
        bindparam("lease_until", lease_until, type_=UTCDateTime()),
        providers,
    )


def _provider_set(providers: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(providers) if providers is not None else None


@functools.lru_cache(maxsize=128)
def claim_template(providers: tuple[str, ...] | None) -> Any:
    """The claim with `worker_id`, `now` and `lease_until` left as parameters.

    Built once per set of providers: building a statement and computing its cache key cost
    SQLAlchemy more than SQLite takes to run it, and a built statement keeps its key.
    """
    return _claim(
        bindparam("worker_id", type_=String()),
        bindparam("now", type_=UTCDateTime()),
        bindparam("lease_until", type_=UTCDateTime()),
        providers,
    )


def _claim(worker_id: Any, at_now: Any, lease_until: Any, providers: Sequence[str] | None) -> Any:
    # next_attempt_at is always set (to created_at on insert), so the queue index serves both
    # the filter and the order: the claim reads one index entry instead of sorting the queue
    runnable: list[ColumnElement[bool]] = [
        ImageRow.status == JobStatus.QUEUED.value,
        ImageRow.next_attempt_at <= at_now,
    ]
    if providers is not None:
        runnable.append(ImageRow.provider.in_(list(providers)))
    candidate = (
        select(ImageRow.id)
        .where(*runnable)
        .order_by(ImageRow.next_attempt_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(ImageRow)
        .where(ImageRow.id == candidate, ImageRow.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.PROCESSING.value,
            lease_owner=worker_id,
            lease_expires_at=lease_until,
            attempts=ImageRow.attempts + 1,
            started_at=func.coalesce(ImageRow.started_at, at_now),
            error_code=None,
            error_message=None,
        )
        .returning(*IMAGES.c)
    )


@functools.lru_cache(maxsize=64)
def owned_update_template(columns: tuple[str, ...]) -> Any:
    """An update of `columns` (parameters `new_<column>`) on the row `job_id` leased by `owner`.

    Built once per set of columns, for the reason given at `claim_template`: renewals, progress
    and completions run it for every job.
    """
    return (
        update(IMAGES)
        .where(
            IMAGES.c.id == bindparam("job_id", type_=IMAGES.c.id.type),
            IMAGES.c.lease_owner == bindparam("owner", type_=String()),
            IMAGES.c.status == JobStatus.PROCESSING.value,
        )
        .values({name: bindparam(f"new_{name}", type_=IMAGES.c[name].type) for name in columns})
    )


def quota_lock_key(user_id: str) -> int:
    """The advisory lock a user's gated inserts queue on: a signed 64-bit number that is the
    same in every process and release (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(f"caverna-quota:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def usage_statement(gate: UsageGate) -> Any:
    """One read of both windows: images since `images_since`, spend since `cost_since`, over
    the user's rows from the earlier of the two (the user/created_at index serves it)."""
    windows = [since for since in (gate.images_since, gate.cost_since) if since is not None]
    if not windows:
        raise ValueError("a usage gate reads at least one window")
    images: Any = (
        func.sum(case((ImageRow.created_at >= gate.images_since, 1), else_=0))
        if gate.images_since is not None
        else func.count()
    )
    cost: Any = (
        func.sum(case((ImageRow.created_at >= gate.cost_since, ImageRow.cost_usd), else_=0.0))
        if gate.cost_since is not None
        else func.count()
    )
    return select(images, cost).where(
        ImageRow.user_id == gate.user_id, ImageRow.created_at >= min(windows)
    )


class SqlJobStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._db = TransactionRunner(engine)
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._wake: asyncio.Event | None = None
        self._listener: asyncpg.Connection | None = None
        self._listener_lock = asyncio.Lock()

    # -- writes that create work --------------------------------------------------------------

    async def insert(
        self,
        jobs: Sequence[dict[str, Any]],
        sequence: dict[str, Any] | None,
        gate: UsageGate | None = None,
    ) -> None:
        """On SQLite the write transaction (BEGIN IMMEDIATE) already holds the database's one
        write lock when the gate counts; on PostgreSQL a transaction-scoped advisory lock per
        user does the same for that user only, and goes with the commit or the rollback."""
        rows = [{"next_attempt_at": job["created_at"], **job} for job in jobs]
        postgres = self._postgres
        usage = usage_statement(gate) if gate is not None else None

        def run(connection: Connection) -> None:
            if gate is not None and usage is not None:
                if postgres:
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": quota_lock_key(gate.user_id)},
                    )
                images, cost = connection.execute(usage).one()
                gate.admit(
                    None if gate.images_since is None else int(images or 0),
                    None if gate.cost_since is None else float(cost or 0.0),
                )
            if sequence is not None:
                connection.execute(insert(SEQUENCES), [sequence])
            if rows:
                connection.execute(insert(IMAGES), rows)
            if postgres:  # delivered to listeners when the transaction commits
                connection.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))

        await self._db.write(run)
        self._event().set()

    # -- reads ----------------------------------------------------------------------------------

    async def _one(self, query: Any) -> ImageJob | None:
        def run(connection: Connection) -> ImageJob | None:
            row = connection.execute(query).first()
            return to_job(row) if row else None

        return await self._db.read(run)

    async def get(self, job_id: uuid.UUID) -> ImageJob | None:
        values = await self._db.read_point(JOB_BY_ID, {"id": job_id})
        return job_from(values) if values is not None else None

    async def find_reusable(
        self,
        user_id: str,
        params_hash: str,
        template_version: str,
        provider: str,
        seed: int | None,
    ) -> ImageJob | None:
        live = (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.COMPLETED)
        query = (
            select(IMAGES)
            .where(
                ImageRow.params_hash == params_hash,
                ImageRow.user_id == user_id,
                ImageRow.template_version == template_version,
                ImageRow.provider == provider,
                ImageRow.seed.is_(None) if seed is None else ImageRow.seed == seed,
                ImageRow.status.in_([s.value for s in live]),
            )
            .order_by(ImageRow.created_at.desc())
            .limit(1)
        )
        return await self._one(query)

    async def for_sequence(self, sequence_id: uuid.UUID) -> list[ImageJob]:
        query = (
            select(IMAGES)
            .where(ImageRow.sequence_id == sequence_id)
            .order_by(ImageRow.frame_index, ImageRow.created_at)
        )
        return await self._db.read(
            lambda connection: [to_job(row) for row in connection.execute(query).all()]
        )

    async def counts(self) -> dict[str, int]:
        query = select(ImageRow.status, func.count()).group_by(ImageRow.status)
        return await self._db.read(
            lambda connection: {status: int(n) for status, n in connection.execute(query).all()}
        )

    # -- the lease ------------------------------------------------------------------------------

    async def claim(
        self, worker_id: str, lease_seconds: float, providers: Sequence[str] | None = None
    ) -> ImageJob | None:
        if providers is not None and not providers:
            return None
        now = self._clock()
        statement = claim_template(_provider_set(providers))
        values = {
            "worker_id": worker_id,
            "now": now,
            "lease_until": now + timedelta(seconds=lease_seconds),
        }

        def run(connection: Connection) -> ImageJob | None:
            row = connection.execute(statement, values).first()
            return to_job(row) if row else None

        return await self._db.write(run)

    async def _update_owned(self, job_id: uuid.UUID, worker_id: str, **values: Any) -> bool:
        statement = owned_update_template(tuple(sorted(values)))
        parameters = {f"new_{name}": value for name, value in values.items()}
        parameters.update(job_id=job_id, owner=worker_id)
        return await self._db.write(
            lambda connection: bool(connection.execute(statement, parameters).rowcount)
        )

    async def renew(self, job_id: uuid.UUID, worker_id: str, lease_seconds: float) -> bool:
        until = self._clock() + timedelta(seconds=lease_seconds)
        return await self._update_owned(job_id, worker_id, lease_expires_at=until)

    async def report_progress(self, job_id: uuid.UUID, worker_id: str, progress: float) -> bool:
        value = min(max(progress, 0.0), 1.0)
        return await self._update_owned(job_id, worker_id, progress=value)

    async def complete(self, job_id: uuid.UUID, worker_id: str, result: CompletedImage) -> bool:
        return await self._update_owned(
            job_id,
            worker_id,
            status=JobStatus.COMPLETED.value,
            progress=1.0,
            completed_at=self._clock(),
            lease_owner=None,
            lease_expires_at=None,
            # the thumbnail and analyses come after completion, from the derivatives pass
            derivatives_status=DERIVATIVES_PENDING,
            **dataclasses.asdict(result),
        )

    async def pending_derivatives(self, limit: int) -> list[ImageJob]:
        query = (
            select(IMAGES)
            .where(
                ImageRow.derivatives_status == DERIVATIVES_PENDING,
                ImageRow.status == JobStatus.COMPLETED.value,
            )
            .order_by(ImageRow.completed_at)
            .limit(limit)
        )
        return await self._db.read(
            lambda connection: [to_job(row) for row in connection.execute(query).all()]
        )

    async def finish_derivatives(self, job_id: uuid.UUID, status: str) -> bool:
        if status not in (DERIVATIVES_DONE, DERIVATIVES_FAILED):
            raise ValueError(f"derivatives status {status!r}: expected done or failed")
        statement = (
            update(IMAGES)
            .where(ImageRow.id == job_id, ImageRow.status == JobStatus.COMPLETED.value)
            .values(derivatives_status=status)
        )
        return await self._db.write(lambda connection: bool(connection.execute(statement).rowcount))

    async def retry_later(
        self,
        job_id: uuid.UUID,
        worker_id: str,
        code: str,
        message: str,
        at: datetime,
        attempt_log: list[dict[str, Any]] | None = None,
    ) -> bool:
        logged = {"attempt_log": attempt_log} if attempt_log is not None else {}
        done = await self._update_owned(
            job_id,
            worker_id,
            **logged,
            status=JobStatus.QUEUED.value,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=at,
            error_code=code,
            error_message=message[:2000],
            progress=0.0,
        )
        if done:
            self._event().set()
        return done

    async def fail(
        self,
        job_id: uuid.UUID,
        worker_id: str,
        code: str,
        message: str,
        attempt_log: list[dict[str, Any]] | None = None,
    ) -> bool:
        logged = {"attempt_log": attempt_log} if attempt_log is not None else {}
        return await self._update_owned(
            job_id,
            worker_id,
            **logged,
            status=JobStatus.FAILED.value,
            lease_owner=None,
            lease_expires_at=None,
            completed_at=self._clock(),
            error_code=code,
            error_message=message[:2000],
        )

    async def cancel(self, job_id: uuid.UUID) -> ImageJob | None:
        cancellable = [JobStatus.QUEUED.value, JobStatus.PROCESSING.value]
        statement = (
            update(ImageRow)
            .where(ImageRow.id == job_id, ImageRow.status.in_(cancellable))
            .values(
                status=JobStatus.CANCELLED.value,
                lease_owner=None,
                lease_expires_at=None,
                completed_at=self._clock(),
            )
        )

        def run(connection: Connection) -> ImageJob | None:
            connection.execute(statement)
            row = connection.execute(select(IMAGES).where(IMAGES.c.id == job_id)).first()
            return to_job(row) if row else None

        return await self._db.write(run)

    async def mark_deleted(self, job_id: uuid.UUID) -> ImageJob | None:
        """Soft-delete: the row stays for history and audit, a running job loses its lease."""
        statement = (
            update(ImageRow)
            .where(ImageRow.id == job_id, ImageRow.status != JobStatus.DELETED.value)
            .values(
                status=JobStatus.DELETED.value,
                lease_owner=None,
                lease_expires_at=None,
                deleted_at=self._clock(),
            )
        )

        def run(connection: Connection) -> ImageJob | None:
            connection.execute(statement)
            row = connection.execute(select(IMAGES).where(IMAGES.c.id == job_id)).first()
            return to_job(row) if row else None

        return await self._db.write(run)

    async def recent_latencies(self, provider: str, limit: int) -> list[float]:
        """Provider latencies (ms) of the latest completed jobs: the basis of an ETA."""
        query = (
            select(ImageRow.provider_latency_ms)
            .where(
                ImageRow.status == JobStatus.COMPLETED.value,
                ImageRow.provider == provider,
                ImageRow.provider_latency_ms.is_not(None),
            )
            .order_by(ImageRow.completed_at.desc())
            .limit(limit)
        )
        return await self._db.read(
            lambda connection: [float(v or 0.0) for v in connection.execute(query).scalars()]
        )

    async def usage(self, user_id: str, since: datetime) -> tuple[int, float]:
        """Images a user asked for since a moment (deleted ones too: they cost) and their cost."""
        query = select(func.count(), func.coalesce(func.sum(ImageRow.cost_usd), 0.0)).where(
            ImageRow.user_id == user_id, ImageRow.created_at >= since
        )

        def run(connection: Connection) -> tuple[int, float]:
            count, cost = connection.execute(query).one()
            return int(count), float(cost or 0.0)

        return await self._db.read(run)

    async def breakdown(self) -> dict[str, list[dict[str, Any]]]:
        """Images and cost by provider and status, and by user: the admin's usage view."""
        cost = func.coalesce(func.sum(ImageRow.cost_usd), 0.0)
        by_provider = (
            select(ImageRow.provider, ImageRow.status, func.count(), cost)
            .group_by(ImageRow.provider, ImageRow.status)
            .order_by(ImageRow.provider, ImageRow.status)
        )
        by_user = (
            select(ImageRow.user_id, func.count(), cost)
            .group_by(ImageRow.user_id)
            .order_by(ImageRow.user_id)
        )

        def run(connection: Connection) -> dict[str, list[dict[str, Any]]]:
            return {
                "by_provider": [
                    {"provider": p, "status": s, "images": int(n), "cost_usd": float(c or 0.0)}
                    for p, s, n, c in connection.execute(by_provider).all()
                ],
                "by_user": [
                    {"user_id": u, "images": int(n), "cost_usd": float(c or 0.0)}
                    for u, n, c in connection.execute(by_user).all()
                ],
            }

        return await self._db.read(run)

    async def set_review(
        self,
        job_id: uuid.UUID,
        status: str,
        reason: str | None,
        note: str | None,
        reviewer: str,
    ) -> bool:
        """Record an approval or a rejection (with its reason) on the image."""
        statement = (
            update(ImageRow)
            .where(ImageRow.id == job_id, ImageRow.status == JobStatus.COMPLETED.value)
            .values(
                review_status=status,
                review_reason=reason,
                review_note=note,
                reviewed_by=reviewer,
                reviewed_at=self._clock(),
            )
        )
        return await self._db.write(lambda connection: bool(connection.execute(statement).rowcount))

    async def review(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        """The image's review, or None when nobody has reviewed it."""
        query = select(
            ImageRow.review_status,
            ImageRow.review_reason,
            ImageRow.review_note,
            ImageRow.reviewed_by,
            ImageRow.reviewed_at,
        ).where(ImageRow.id == job_id)

        def run(connection: Connection) -> dict[str, Any] | None:
            row = connection.execute(query).first()
            if row is None or row.review_status is None:
                return None
            return dict(row._mapping)

        return await self._db.read(run)

    async def queued_ahead(self, job: ImageJob) -> int:
        """How many runnable jobs a queued job waits behind (same order as the claim)."""
        if job.next_attempt_at is None:
            return 0
        values = await self._db.read_point(QUEUED_AHEAD, {"before": job.next_attempt_at})
        return int(values["ahead"]) if values is not None else 0

    async def sweep(self) -> SweepResult:
        now = self._clock()
        expired = [
            ImageRow.status == JobStatus.PROCESSING.value,
            ImageRow.lease_expires_at < now,
        ]
        exhausted = (
            update(ImageRow)
            .where(*expired, ImageRow.attempts >= ImageRow.max_attempts)
            .values(
                status=JobStatus.FAILED.value,
                lease_owner=None,
                lease_expires_at=None,
                completed_at=now,
                error_code=JobErrorCode.ATTEMPTS_EXHAUSTED.value,
                error_message="the worker holding the job stopped and no attempts are left",
            )
        )
        requeue = (
            update(ImageRow)
            .where(*expired)
            .values(
                status=JobStatus.QUEUED.value,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=now,
                progress=0.0,
            )
        )

        def run(connection: Connection) -> SweepResult:
            failed = connection.execute(exhausted).rowcount
            requeued = connection.execute(requeue).rowcount
            return SweepResult(requeued=int(requeued), failed=int(failed))

        result = await self._db.write(run)
        if result.requeued:
            self._event().set()
        return result

    # -- wake-ups -------------------------------------------------------------------------------

    def _event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    async def wait_for_work(self, timeout: float) -> None:
        if self._postgres:
            await self._listen()
        event = self._event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    async def _listen(self) -> None:
        async with self._listener_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            dsn = self._engine.url.set(drivername="postgresql").render_as_string(
                hide_password=False
            )
            try:
                connection = await asyncpg.connect(dsn, timeout=5)
                await connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
            except (OSError, asyncpg.PostgresError):
                return  # polling still works; the next wait tries again
            self._listener = connection

    def _on_notify(self, *_args: object) -> None:
        self._event().set()

    async def recent_sequences(self, user_id: str, limit: int) -> list[SequenceRun]:
        """A user's latest storyboard runs, so a page can reopen the last one without an id."""
        query = (
            select(*_RUN_COLUMNS)
            .where(SequenceRow.user_id == user_id)
            .order_by(SequenceRow.created_at.desc())
            .limit(limit)
        )
        return await self._db.read(
            lambda connection: [
                SequenceRun(**row._mapping) for row in connection.execute(query).all()
            ]
        )

    async def sequence_run(self, sequence_id: uuid.UUID) -> SequenceRun | None:
        query = select(*_RUN_COLUMNS).where(SequenceRow.id == sequence_id)

        def run(connection: Connection) -> SequenceRun | None:
            row = connection.execute(query).first()
            return SequenceRun(**row._mapping) if row else None

        return await self._db.read(run)

    async def close(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        self._listener = None
        self._db.close()

    async def recent_by_status(self, status: str, limit: int) -> list[ImageJob]:
        """Jobs in one status across every user, newest first: the admin's view of the queue."""
        query = (
            select(IMAGES)
            .where(ImageRow.status == status)
            .order_by(ImageRow.created_at.desc(), ImageRow.id.desc())
            .limit(limit)
        )
        return await self._db.read(
            lambda connection: [to_job(row) for row in connection.execute(query).all()]
        )

    # -- brand consistency (ConsistencyStore) ----------------------------------------------------

    async def set_consistency(
        self, job_id: uuid.UUID, report: dict[str, Any], score: float | None, phash: str
    ) -> bool:
        statement = (
            update(IMAGES)
            .where(ImageRow.id == job_id, ImageRow.status == JobStatus.COMPLETED.value)
            .values(consistency=report, consistency_score=score, phash=phash)
        )
        return await self._db.write(lambda connection: bool(connection.execute(statement).rowcount))

    async def phash_neighbours(
        self, user_id: str, sequence_id: uuid.UUID | None, recent: int
    ) -> list[dict[str, Any]]:
        columns = (
            ImageRow.id,
            ImageRow.phash,
            ImageRow.sequence_id,
            ImageRow.frame_index,
            ImageRow.reroll_of,
        )
        done = (ImageRow.status == JobStatus.COMPLETED.value, ImageRow.phash.is_not(None))
        latest = (
            select(*columns)
            .where(ImageRow.user_id == user_id, *done)
            .order_by(ImageRow.created_at.desc(), ImageRow.id.desc())
            .limit(recent)
        )
        siblings = (
            select(*columns).where(ImageRow.sequence_id == sequence_id, *done)
            if sequence_id is not None
            else None
        )

        def run(connection: Connection) -> list[dict[str, Any]]:
            found = {row.id: dict(row._mapping) for row in connection.execute(latest).all()}
            if siblings is not None:
                for row in connection.execute(siblings).all():
                    found.setdefault(row.id, dict(row._mapping))
            return list(found.values())

        return await self._db.read(run)

    async def set_reroll(self, job_id: uuid.UUID, root_id: uuid.UUID, attempt: int) -> bool:
        statement = (
            update(IMAGES)
            .where(ImageRow.id == job_id)
            .values(reroll_of=root_id, reroll_attempt=attempt)
        )
        return await self._db.write(lambda connection: bool(connection.execute(statement).rowcount))

    async def rerolls(self, root_id: uuid.UUID) -> list[ImageJob]:
        query = (
            select(IMAGES)
            .where(ImageRow.reroll_of == root_id)
            .order_by(ImageRow.reroll_attempt, ImageRow.created_at)
        )
        return await self._db.read(
            lambda connection: [to_job(row) for row in connection.execute(query).all()]
        )

    async def template_groups(self) -> list[dict[str, Any]]:
        keys = (
            ImageRow.template_version,
            ImageRow.provider,
            ImageRow.pose,
            ImageRow.frame_id.label("frame"),
            ImageRow.variant,
        )
        approved = func.sum(case((ImageRow.review_status == "approved", 1), else_=0))
        query = (
            select(
                *keys,
                func.count().label("count"),
                func.count(ImageRow.review_status).label("reviewed"),
                approved.label("approved"),
                func.sum(ImageRow.consistency_score).label("score_sum"),
                func.count(ImageRow.consistency_score).label("scored"),
            )
            .where(ImageRow.status == JobStatus.COMPLETED.value)
            .group_by(*keys)
        )

        def run(connection: Connection) -> list[dict[str, Any]]:
            return [dict(row._mapping) for row in connection.execute(query).all()]

        return await self._db.read(run)

    # -- the queue's shape, for metrics ----------------------------------------------------------

    async def backlog(self) -> list[QueueBacklog]:
        """Reads only live rows through the queue index (status first), so its cost follows the
        backlog, not the history."""
        queued, processing = JobStatus.QUEUED.value, JobStatus.PROCESSING.value
        # same test as the claim: a job waiting out a retry delay is queued but not yet late
        runnable_since = func.min(
            case((ImageRow.next_attempt_at <= self._clock(), ImageRow.next_attempt_at))
        )
        query = (
            select(ImageRow.provider, ImageRow.status, func.count(), runnable_since)
            .where(ImageRow.status.in_([queued, processing]))
            .group_by(ImageRow.provider, ImageRow.status)
        )

        def run(connection: Connection) -> list[QueueBacklog]:
            found: dict[str, QueueBacklog] = {}
            for provider, status, count, since in connection.execute(query).all():
                seen = found.get(provider) or QueueBacklog(provider, 0, 0, None)
                if status == queued:
                    seen = dataclasses.replace(seen, queued=int(count), oldest_runnable_at=since)
                else:
                    seen = dataclasses.replace(seen, processing=int(count))
                found[provider] = seen
            return sorted(found.values(), key=lambda backlog: backlog.provider)

        return await self._db.read(run)
