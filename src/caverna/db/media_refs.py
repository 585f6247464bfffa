"""Which stored objects the image rows name: the database side of storage gc and migration.

Rows are the source of truth for media. A live row (any status but ``deleted``) keeps the keys it
names; a queued or processing row also keeps the keys its worker is about to write, which are
derived from its id, creation time and delivery format exactly as the worker derives them, so a
collector running beside the workers never takes an object whose row has not committed yet.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.engine import READ_ONLY
from caverna.db.models import ImageRow
from caverna.domain.jobs import JobStatus
from caverna.services.media_ops import KeyIndex, MediaReference
from caverna.storage.keys import image_key, thumbnail_key

IMAGES: Table = ImageRow.__table__  # type: ignore[assignment]
_IN_FLIGHT = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)
_COLUMNS = (
    IMAGES.c.id,
    IMAGES.c.status,
    IMAGES.c.created_at,
    IMAGES.c.delivery_format,
    IMAGES.c.storage_key,
    IMAGES.c.thumbnail_key,
    IMAGES.c.sha256,
    # the post-completion pass's status tells a thumbnail not made yet from a lost one
    *(column for column in IMAGES.c if column.name == "derivatives_status"),
)
_THUMBNAIL_MADE = (None, "done")  # NULL: completed before the pass existed, thumbnail inline


def references_of(rows: Iterable[Any]) -> list[MediaReference]:
    """Objects that live rows name, the main image with the digest its row recorded."""
    found: list[MediaReference] = []
    for row in rows:
        if row.status == JobStatus.DELETED.value:
            continue
        image_id = uuid.UUID(str(row.id))
        if row.storage_key:
            found.append(MediaReference(row.storage_key, image_id, row.sha256 or None))
        if row.thumbnail_key:
            made = getattr(row, "derivatives_status", None) in _THUMBNAIL_MADE
            found.append(MediaReference(row.thumbnail_key, image_id, None, required=made))
    return sorted(found, key=lambda reference: reference.key)


def key_index_of(rows: Iterable[Any]) -> KeyIndex:
    live: set[str] = set()
    deleted: set[str] = set()
    for row in rows:
        named = {key for key in (row.storage_key, row.thumbnail_key) if key}
        if row.status == JobStatus.DELETED.value:
            deleted |= named
            continue
        live |= named
        if row.status in _IN_FLIGHT:
            image_id = uuid.UUID(str(row.id))
            # a format the key scheme refuses is never written either
            with contextlib.suppress(ValueError):
                live.add(image_key(image_id, row.created_at, row.delivery_format))
            live.add(thumbnail_key(image_id, row.created_at))
    return KeyIndex(live=frozenset(live), deleted=frozenset(deleted - live))


def read_rows(connection: Connection) -> list[Any]:
    return list(connection.execute(select(*_COLUMNS)))


class SqlMediaReferences:
    """Reads the rows' keys in one read transaction (a consistent view on both databases)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _rows(self) -> list[Any]:
        async with self._engine.connect() as connection:
            # read-only: on SQLite a deferred transaction, so no writer waits behind it
            reader = await connection.execution_options(**{READ_ONLY: True})
            return await reader.run_sync(read_rows)

    async def references(self) -> list[MediaReference]:
        return references_of(await self._rows())

    async def key_index(self) -> KeyIndex:
        return key_index_of(await self._rows())
