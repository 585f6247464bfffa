"""Listing with last-modified times on every store, garbage collection, and migration between
stores (a folder and moto's S3 server on loopback), against a real SQLite database of rows."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, insert, select, update
from typer.testing import CliRunner, Result

from caverna.cli.app import app as cli
from caverna.db.accounts import SqlAuditStore
from caverna.db.engine import TransactionRunner, create_engine
from caverna.db.media_refs import SqlMediaReferences
from caverna.db.models import AuditRow, ImageRow
from caverna.domain.jobs import JobStatus
from caverna.services.accounts import AuditLog
from caverna.services.media_ops import collect_garbage, migrate_objects
from caverna.storage.base import ListedObject, ObjectStore, StoredObject
from caverna.storage.keys import content_type_for, image_key, thumbnail_key
from caverna.storage.local import LocalStore
from caverna.storage.memory import MemoryStore
from caverna.storage.s3 import S3Store
from tests.integration.conftest import S3Server
from tests.integration.test_storage import s3_settings

IMAGES: Table = ImageRow.__table__  # type: ignore[assignment]
AUDIT: Table = AuditRow.__table__  # type: ignore[assignment]
WHEN = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


# --- list_objects: the contract on every backend -------------------------------------------------


@pytest.fixture(params=["local", "memory", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    built: ObjectStore
    if request.param == "local":
        built = LocalStore(tmp_path / "media")
    elif request.param == "memory":
        built = MemoryStore()
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        built = S3Store(s3_settings(server, server.create_bucket()))
    yield built
    await built.close()


async def test_list_objects_gives_size_and_an_aware_last_modified(store: ObjectStore) -> None:
    keys = {
        "images/2026/11/a.webp": b"alpha",
        "images/2026/12/b.png": b"bravo!!",
        "thumbs/2026/11/a.webp": b"t",
    }
    before = datetime.now(UTC) - timedelta(seconds=5)
    for key, data in keys.items():
        await store.put(key, data, content_type=content_type_for(key))
    after = datetime.now(UTC) + timedelta(seconds=5)

    listed = await store.list_objects("")

    assert [item.key for item in listed] == sorted(keys)
    assert [item.key for item in listed] == await store.list_keys("")
    for item in listed:
        assert item.size == len(keys[item.key])
        assert item.last_modified.tzinfo is not None
        assert before <= item.last_modified <= after


async def test_list_objects_takes_a_plain_string_prefix(store: ObjectStore) -> None:
    for key in ("images/2026/11/a.webp", "images/2026/12/b.webp", "images/2025/11/c.webp"):
        await store.put(key, b"x", content_type="image/webp")

    assert [item.key for item in await store.list_objects("images/2026/1")] == [
        "images/2026/11/a.webp",
        "images/2026/12/b.webp",
    ]
    assert await store.list_objects("thumbs/") == []
    with pytest.raises(ValueError, match=r"^object prefix"):
        await store.list_objects("../images")


async def test_list_objects_forgets_deleted_objects_and_sees_rewrites(store: ObjectStore) -> None:
    await store.put("images/2026/11/a.webp", b"one", content_type="image/webp")
    await store.put("images/2026/11/b.webp", b"two", content_type="image/webp")
    await store.delete("images/2026/11/a.webp")
    await store.put("images/2026/11/b.webp", b"three", content_type="image/webp")

    listed = await store.list_objects("images/")
    assert [(item.key, item.size) for item in listed] == [("images/2026/11/b.webp", 5)]


async def test_memory_store_stamps_writes_with_its_clock() -> None:
    now = [WHEN]
    store = MemoryStore(clock=lambda: now[0])
    await store.put("images/2026/11/a.webp", b"x", content_type="image/webp")
    now[0] = WHEN + timedelta(hours=1)
    await store.put("images/2026/11/b.webp", b"y", content_type="image/webp")
    assert await store.list_objects("images/") == [
        ListedObject("images/2026/11/a.webp", 1, WHEN),
        ListedObject("images/2026/11/b.webp", 1, WHEN + timedelta(hours=1)),
    ]


# --- a database of image rows ------------------------------------------------------------------


class Rows:
    """Image rows written straight into a migrated SQLite database, as workers leave them."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    async def add(
        self,
        status: JobStatus,
        *,
        data: bytes | None = None,
        derivatives: str | None = "done",
        created_at: datetime = WHEN,
    ) -> tuple[uuid.UUID, str, str]:
        image_id = uuid.uuid4()
        key = image_key(image_id, created_at, "webp")
        thumb = thumbnail_key(image_id, created_at)
        values: dict[str, Any] = {
            "id": image_id,
            "user_id": "ana",
            "status": status.value,
            "params": {},
            "params_hash": "0" * 64,
            "pack_id": "capitao-caverna",
            "pack_version": "1.0.0",
            "template_version": "e1-0000000000000000",
            "pose": "p",
            "outfit": "o",
            "footwear": "f",
            "provider": "preview",
            "created_at": created_at,
        }
        if status in (JobStatus.COMPLETED, JobStatus.DELETED):
            values |= {
                "storage_key": key,
                "thumbnail_key": thumb,
                "sha256": hashlib.sha256(data or b"").hexdigest(),
                "derivatives_status": derivatives,
            }
        async with self.engine.begin() as connection:
            await connection.execute(insert(IMAGES).values(**values))
        return image_id, key, thumb

    async def delete(self, image_id: uuid.UUID) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                update(IMAGES).where(IMAGES.c.id == image_id).values(status="deleted")
            )

    async def audit_rows(self) -> list[Any]:
        async with self.engine.connect() as connection:
            return list(await connection.execute(select(AUDIT)))


@pytest.fixture
async def rows(database_url: str) -> AsyncIterator[Rows]:
    """Rows in SQLite and in PostgreSQL (migrated and emptied by the shared fixture)."""
    made = Rows(database_url)
    yield made
    await made.engine.dispose()


# --- garbage collection ------------------------------------------------------------------------


async def test_gc_finds_exactly_the_planted_orphans_and_honours_the_grace_period(
    rows: Rows,
) -> None:
    now = [WHEN]
    store = MemoryStore(clock=lambda: now[0])
    _live_id, live_key, live_thumb = await rows.add(JobStatus.COMPLETED, data=b"live")
    await store.put(live_key, b"live", content_type="image/webp")
    await store.put(live_thumb, b"thumb", content_type="image/webp")
    # a job still running: its object is stored, its row not completed yet
    running_id, _, _ = await rows.add(JobStatus.PROCESSING)
    running_key = image_key(running_id, WHEN, "webp")
    await store.put(running_key, b"in flight", content_type="image/webp")
    # an image deleted while the store was down: the row is gone, its objects stayed
    gone_id, gone_key, gone_thumb = await rows.add(JobStatus.COMPLETED, data=b"gone")
    await store.put(gone_key, b"gone", content_type="image/webp")
    await store.put(gone_thumb, b"gone-thumb", content_type="image/webp")
    await rows.delete(gone_id)
    # a crash between put and commit, long ago, and an export nobody collects here
    crashed = image_key(uuid.uuid4(), WHEN, "png")
    await store.put(crashed, b"crashed", content_type="image/png")
    await store.put("exports/2026/11/e.zip", b"zip", content_type="application/zip")
    # an orphan written just now: too young to judge
    now[0] = WHEN + timedelta(hours=2)
    fresh = image_key(uuid.uuid4(), WHEN, "webp")
    await store.put(fresh, b"fresh", content_type="image/webp")
    everything = await store.list_keys("")
    references = SqlMediaReferences(rows.engine)

    report = await collect_garbage(
        store, references, grace=timedelta(minutes=60), apply=False, clock=lambda: now[0]
    )

    assert {(item.key, item.reason) for item in report.garbage} == {
        (gone_key, "deleted_row"),
        (gone_thumb, "deleted_row"),
        (crashed, "orphan"),
    }
    assert report.garbage_bytes == len(b"gone") + len(b"gone-thumb") + len(b"crashed")
    assert (report.scanned, report.live, report.recent) == (7, 3, 1)
    assert report.deleted == 0
    assert await store.list_keys("") == everything  # a dry run changes nothing
    assert await rows.audit_rows() == []

    now[0] = WHEN + timedelta(hours=3)  # the fresh orphan is now past its grace period
    runner = TransactionRunner(rows.engine)
    try:
        applied = await collect_garbage(
            store,
            references,
            grace=timedelta(minutes=60),
            apply=True,
            clock=lambda: now[0],
            audit=AuditLog(SqlAuditStore(runner), lambda: now[0]),
            actor="ops",
        )
    finally:
        runner.close()

    assert {item.key for item in applied.garbage} == {gone_key, gone_thumb, crashed, fresh}
    assert applied.deleted == 4
    assert await store.list_keys("") == sorted(
        [live_key, live_thumb, running_key, "exports/2026/11/e.zip"]
    )
    (entry,) = await rows.audit_rows()
    assert (entry.actor, entry.action, entry.target) == ("ops", "storage_gc", "memory")
    assert entry.details["deleted"] == 4
    assert sorted(entry.details["keys"]) == sorted([gone_key, gone_thumb, crashed, fresh])


async def test_gc_refuses_a_negative_grace_period(rows: Rows) -> None:
    store = MemoryStore()
    await store.put(image_key(uuid.uuid4(), WHEN, "webp"), b"x", content_type="image/webp")
    with pytest.raises(
        ValueError,
        match=r"between 0 and 365 days \(525600 minutes\), got -1 minutes",
    ):
        await collect_garbage(
            store,
            SqlMediaReferences(rows.engine),
            grace=timedelta(minutes=-1),
            apply=True,
            clock=lambda: WHEN,
        )
    assert len(await store.list_keys("")) == 1


# --- migration between stores ------------------------------------------------------------------


class Interrupted(Exception):
    """Stands for the process being killed in the middle of a migration."""


class CutAfter:
    """A store that lets `limit` puts through, then fails every later one before writing."""

    def __init__(self, inner: ObjectStore, limit: int) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.limit = limit
        self.puts = 0

    async def put(
        self, key: str, data: bytes, *, content_type: str, if_absent: bool = False
    ) -> None:
        self.puts += 1
        if self.puts > self.limit:
            raise Interrupted(key)
        await self.inner.put(key, data, content_type=content_type, if_absent=if_absent)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def head(self, key: str) -> StoredObject | None:
        return await self.inner.head(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def list_keys(self, prefix: str) -> list[str]:
        return await self.inner.list_keys(prefix)

    async def list_objects(self, prefix: str) -> list[ListedObject]:
        return await self.inner.list_objects(prefix)

    async def url(self, key: str, *, expires_in: int | None = None) -> str | None:
        return await self.inner.url(key, expires_in=expires_in)

    def local_path(self, key: str) -> Path | None:
        return self.inner.local_path(key)

    async def close(self) -> None:
        await self.inner.close()


async def _digests(store: ObjectStore) -> dict[str, str]:
    return {
        key: hashlib.sha256(await store.get(key)).hexdigest() for key in await store.list_keys("")
    }


async def test_migrate_local_to_s3_resumes_after_an_interruption_and_back(
    rows: Rows, tmp_path: Path, s3_server: S3Server
) -> None:
    local = LocalStore(tmp_path / "media")
    expected: dict[str, str] = {}
    for number in range(12):
        data = f"image {number}".encode() * (number + 1)
        _, key, thumb = await rows.add(JobStatus.COMPLETED, data=data)
        await local.put(key, data, content_type="image/webp")
        await local.put(thumb, b"thumb %d" % number, content_type="image/webp")
        expected[key] = hashlib.sha256(data).hexdigest()
        expected[thumb] = hashlib.sha256(b"thumb %d" % number).hexdigest()
    # a thumbnail the post-completion pass has not made yet: nothing to copy, not an error
    _, pending_key, _ = await rows.add(JobStatus.COMPLETED, data=b"new", derivatives="pending")
    await local.put(pending_key, b"new", content_type="image/webp")
    expected[pending_key] = hashlib.sha256(b"new").hexdigest()
    # objects no live row names are not copied
    gone_id, gone_key, _ = await rows.add(JobStatus.COMPLETED, data=b"gone")
    await local.put(gone_key, b"gone", content_type="image/webp")
    await rows.delete(gone_id)
    await local.put(image_key(uuid.uuid4(), WHEN, "webp"), b"orphan", content_type="image/webp")
    references = SqlMediaReferences(rows.engine)
    bucket = S3Store(s3_settings(s3_server, s3_server.create_bucket()))
    source_before = await _digests(local)

    dry = await migrate_objects(local, bucket, references, dry_run=True)
    assert (dry.total, dry.copied, dry.skipped, dry.not_made) == (26, 25, 0, 1)
    assert await bucket.list_keys("") == []

    cut = CutAfter(bucket, limit=10)
    with pytest.raises(Interrupted):
        await migrate_objects(local, cut, references, concurrency=4)
    # puts still in flight when the run stopped were abandoned, as in a killed process
    landed = await _digests(bucket)
    assert 6 <= len(landed) <= 10
    assert all(expected[key] == digest for key, digest in landed.items())

    resumed = await migrate_objects(local, bucket, references, concurrency=4)
    assert (resumed.total, resumed.copied, resumed.skipped) == (26, 25 - len(landed), len(landed))
    assert resumed.not_made == 1
    assert resumed.ok
    assert await _digests(bucket) == expected
    assert await _digests(local) == source_before  # the source is never changed

    again = await migrate_objects(local, bucket, references)
    assert (again.copied, again.skipped) == (0, 25)

    back = LocalStore(tmp_path / "back")
    returned = await migrate_objects(bucket, back, references)
    assert (returned.copied, returned.skipped, returned.not_made) == (25, 0, 1)
    assert await _digests(back) == expected


async def test_migrate_reports_missing_and_corrupt_sources_and_copies_neither(
    rows: Rows, tmp_path: Path
) -> None:
    source = LocalStore(tmp_path / "media")
    target = MemoryStore()
    _, good, good_thumb = await rows.add(JobStatus.COMPLETED, data=b"good")
    await source.put(good, b"good", content_type="image/webp")
    await source.put(good_thumb, b"t", content_type="image/webp")
    _, lost, lost_thumb = await rows.add(JobStatus.COMPLETED, data=b"lost")
    _, rotten, rotten_thumb = await rows.add(JobStatus.COMPLETED, data=b"as recorded")
    await source.put(rotten, b"bit rot", content_type="image/webp")
    await source.put(rotten_thumb, b"t", content_type="image/webp")

    report = await migrate_objects(source, target, SqlMediaReferences(rows.engine))

    assert report.missing == sorted([lost, lost_thumb])
    assert report.corrupt == [rotten]
    assert report.copied == 3
    assert not report.ok
    assert await target.list_keys("") == sorted([good, good_thumb, rotten_thumb])


async def test_migrate_overwrites_a_target_object_whose_sha256_differs(
    rows: Rows, tmp_path: Path
) -> None:
    source = MemoryStore()
    target = MemoryStore()
    _, key, thumb = await rows.add(JobStatus.COMPLETED, data=b"right")
    await source.put(key, b"right", content_type="image/webp")
    await source.put(thumb, b"t", content_type="image/webp")
    await target.put(key, b"wrong", content_type="image/webp")  # same size, other bytes

    report = await migrate_objects(source, target, SqlMediaReferences(rows.engine))

    assert (report.copied, report.skipped) == (2, 0)
    assert await target.get(key) == b"right"


async def test_the_cli_copies_a_folder_into_a_bucket_on_either_database(
    rows: Rows, database_url: str, tmp_path: Path, s3_server: S3Server
) -> None:
    local = LocalStore(tmp_path / "media")
    keys = []
    for number in range(3):
        data = b"cli %d" % number
        _, key, thumb = await rows.add(JobStatus.COMPLETED, data=data)
        await local.put(key, data, content_type="image/webp")
        await local.put(thumb, b"t", content_type="image/webp")
        keys += [key, thumb]
    bucket_name = s3_server.create_bucket()
    bucket_url = f"s3://{bucket_name}?endpoint={s3_server.endpoint}"
    arguments = ["storage", "migrate", "--from", f"file://{tmp_path / 'media'}", "--to"]
    environment = {"CAVERNA_DATABASE_URL": database_url, "CAVERNA_DATA_DIR": str(tmp_path)}

    def run(*extra: str) -> Result:
        return CliRunner().invoke(cli, [*arguments, *extra], env=environment)

    first = await asyncio.to_thread(run, bucket_url, "--json")
    second = await asyncio.to_thread(run, bucket_url, "--json")

    assert first.exit_code == 0, first.output
    assert (json.loads(first.stdout)["copied"], json.loads(first.stdout)["skipped"]) == (6, 0)
    assert (json.loads(second.stdout)["copied"], json.loads(second.stdout)["skipped"]) == (0, 6)
    bucket = S3Store(s3_settings(s3_server, bucket_name))
    assert await _digests(bucket) == await _digests(local)
    assert sorted(keys) == await bucket.list_keys("")
