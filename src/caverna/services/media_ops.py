"""Operator tasks over stored media: copying it to another store, and collecting garbage.

Both work from what the image rows name (``MediaReferences``) and a store's own listing, through
the ``ObjectStore`` interface only, so they run the same against a folder, memory or a bucket.

Garbage is an object under the image or thumbnail prefixes that no live row names: left by a
crash between a worker's put and its commit, or by a deleted image whose objects could not be
removed at the time. The collector lists the store *before* it reads the rows: a row always exists
before its objects are written, so every listed object whose row is live is seen as live. A grace
period on top spares anything written recently, whatever wrote it.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from caverna.domain.accounts import AuditAction
from caverna.storage.base import ObjectNotFound, ObjectStore, StorageError
from caverna.storage.keys import content_type_for

GC_PREFIXES = ("images/", "thumbs/")
MAX_GRACE = timedelta(days=365)
AUDIT_SAMPLE = 100
"""Keys named in the audit entry of a collection; the count and bytes cover every object."""


@dataclass(frozen=True, slots=True)
class MediaReference:
    """An object a live row names; ``sha256`` is the digest the row recorded, when it has one.

    ``required`` is False for a thumbnail the post-completion pass has not made yet: its row
    names the key in advance, and its absence is expected rather than a loss.
    """

    key: str
    image_id: uuid.UUID
    sha256: str | None
    required: bool = True


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """Keys live rows name (or are about to write), and keys only deleted rows still name."""

    live: frozenset[str]
    deleted: frozenset[str]


class MediaReferences(Protocol):
    async def references(self) -> list[MediaReference]:
        """Objects named by live rows, sorted by key."""
        ...

    async def key_index(self) -> KeyIndex:
        """Every key the rows protect, read in one consistent view."""
        ...


class AuditRecorder(Protocol):
    async def record(
        self, actor: str, action: AuditAction, target: str | None = None, **details: Any
    ) -> Any: ...


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- garbage collection -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GarbageObject:
    key: str
    size: int
    last_modified: datetime
    reason: Literal["orphan", "deleted_row"]


@dataclass
class GcReport:
    scanned: int = 0
    live: int = 0
    recent: int = 0
    """Unreferenced objects younger than the grace period: left alone this time."""
    garbage: list[GarbageObject] = field(default_factory=list)
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    applied: bool = False

    @property
    def garbage_bytes(self) -> int:
        return sum(item.size for item in self.garbage)


def check_grace(grace: timedelta) -> timedelta:
    """A negative or absurd grace period is a typo, not a wish to delete in-flight objects."""
    if grace < timedelta(0) or grace > MAX_GRACE:
        minutes = int(grace.total_seconds() // 60)
        raise ValueError(
            f"the grace period must be between 0 and {MAX_GRACE.days} days "
            f"({int(MAX_GRACE.total_seconds() // 60)} minutes), got {minutes} minutes"
        )
    return grace


async def collect_garbage(
    store: ObjectStore,
    references: MediaReferences,
    *,
    grace: timedelta,
    apply: bool,
    clock: Callable[[], datetime],
    audit: AuditRecorder | None = None,
    actor: str = "cli",
    progress: Callable[[int, int], None] | None = None,
) -> GcReport:
    """Find unreferenced objects older than ``grace``; delete them only when ``apply``."""
    check_grace(grace)
    cutoff = clock() - grace
    listed = [item for prefix in GC_PREFIXES for item in await store.list_objects(prefix)]
    index = await references.key_index()  # after the listing: see the module docstring
    report = GcReport(scanned=len(listed), applied=apply)
    for item in listed:
        if item.key in index.live:
            report.live += 1
        elif item.last_modified > cutoff:
            report.recent += 1
        else:
            reason: Literal["orphan", "deleted_row"] = (
                "deleted_row" if item.key in index.deleted else "orphan"
            )
            report.garbage.append(GarbageObject(item.key, item.size, item.last_modified, reason))
    if not apply:
        return report
    for done, garbage in enumerate(report.garbage, start=1):
        try:
            await store.delete(garbage.key)
            report.deleted += 1
        except StorageError as exc:
            report.failed.append((garbage.key, str(exc)))
        if progress is not None:
            progress(done, len(report.garbage))
    if audit is not None and report.garbage:
        await audit.record(
            actor,
            AuditAction.STORAGE_GC,
            store.kind,
            deleted=report.deleted,
            failed=len(report.failed),
            bytes=report.garbage_bytes,
            grace_minutes=int(grace.total_seconds() // 60),
            keys=[item.key for item in report.garbage[:AUDIT_SAMPLE]],
        )
    return report


# --- migration between stores -----------------------------------------------------------------

Outcome = Literal["copied", "skipped", "missing", "not_made", "corrupt", "failed"]


@dataclass
class MigrationReport:
    total: int = 0
    copied: int = 0
    """Objects copied and verified (in a dry run: objects that would be copied)."""
    skipped: int = 0
    """Already in the target with the same sha256: what makes an interrupted run resumable."""
    bytes_copied: int = 0
    not_made: int = 0
    """Thumbnails not made yet in the source (nothing to copy; the target makes them on demand)."""
    missing: list[str] = field(default_factory=list)
    """Named by a live row but absent from the source."""
    corrupt: list[str] = field(default_factory=list)
    """In the source with a sha256 other than the one its row recorded: not copied."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.failed)


async def migrate_objects(
    source: ObjectStore,
    target: ObjectStore,
    references: MediaReferences,
    *,
    dry_run: bool = False,
    concurrency: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> MigrationReport:
    """Copy every object live rows name from ``source`` to ``target``; never delete anything.

    Each copy is read back from the target and compared by sha256. An object already in the
    target with the same digest is skipped, so running again after an interruption resumes.
    Storage failures are recorded per object and the run goes on; anything else stops it.
    """
    if not 1 <= concurrency <= 64:
        raise ValueError(f"concurrency must be between 1 and 64, got {concurrency}")
    wanted = await references.references()
    report = MigrationReport(total=len(wanted), dry_run=dry_run)
    pending: Iterator[MediaReference] = iter(wanted)
    finished = 0

    async def copy_one(reference: MediaReference) -> Outcome:
        key = reference.key
        try:
            data = await source.get(key)
        except ObjectNotFound:
            if not reference.required:
                report.not_made += 1
                return "not_made"
            report.missing.append(key)
            return "missing"
        digest = sha256_hex(data)
        if reference.sha256 is not None and digest != reference.sha256:
            report.corrupt.append(key)
            return "corrupt"
        existing = await target.head(key)
        if (
            existing is not None
            and existing.size == len(data)
            and sha256_hex(await target.get(key)) == digest
        ):
            report.skipped += 1
            return "skipped"
        if dry_run:
            report.copied += 1
            return "copied"
        await target.put(key, data, content_type=content_type_for(key))
        if sha256_hex(await target.get(key)) != digest:
            report.failed.append((key, "the copy read back has another sha256"))
            return "failed"
        report.copied += 1
        report.bytes_copied += len(data)
        return "copied"

    async def lane() -> None:
        nonlocal finished
        for reference in pending:  # lanes share one iterator: each object is taken once
            try:
                await copy_one(reference)
            except StorageError as exc:
                report.failed.append((reference.key, str(exc)))
            finished += 1
            if progress is not None:
                progress(finished, report.total)

    lanes = [asyncio.create_task(lane()) for _ in range(min(concurrency, max(len(wanted), 1)))]
    try:
        await asyncio.gather(*lanes)
    finally:  # an interruption in one lane stops the others before the error goes up
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
    report.missing.sort()
    report.corrupt.sort()
    report.failed.sort()
    return report
