"""Idempotency reservations and share links on SQLAlchemy (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.engine import TransactionRunner
from caverna.db.models import IdempotencyRow, ShareRow
from caverna.services.idempotency import Reservation
from caverna.services.sharing import ShareInfo

IDEMPOTENCY: Table = IdempotencyRow.__table__  # type: ignore[assignment]
SHARES: Table = ShareRow.__table__  # type: ignore[assignment]


class SqlIdempotencyStore:
    def __init__(self, engine: AsyncEngine, runner: TransactionRunner | None = None) -> None:
        self._db = runner or TransactionRunner(engine)

    async def reserve(
        self, user_id: str, key: str, request_hash: str, now: datetime, stale_before: datetime
    ) -> Reservation | None:
        where = (IDEMPOTENCY.c.user_id == user_id, IDEMPOTENCY.c.key == key)

        def run(connection: Connection) -> Reservation | None:
            connection.execute(
                delete(IDEMPOTENCY).where(*where, IDEMPOTENCY.c.created_at < stale_before)
            )
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(IDEMPOTENCY).values(
                            user_id=user_id, key=key, request_hash=request_hash, created_at=now
                        )
                    )
                return None
            except IntegrityError:
                row = connection.execute(select(IDEMPOTENCY).where(*where)).one()
                return Reservation(row.request_hash, row.image_id, row.created_at)

        return await self._db.write(run)

    async def settle(self, user_id: str, key: str, image_id: uuid.UUID) -> None:
        statement = (
            update(IDEMPOTENCY)
            .where(IDEMPOTENCY.c.user_id == user_id, IDEMPOTENCY.c.key == key)
            .values(image_id=image_id)
        )
        await self._db.write(lambda connection: connection.execute(statement))

    async def release(self, user_id: str, key: str) -> None:
        statement = delete(IDEMPOTENCY).where(
            IDEMPOTENCY.c.user_id == user_id,
            IDEMPOTENCY.c.key == key,
            IDEMPOTENCY.c.image_id.is_(None),
        )
        await self._db.write(lambda connection: connection.execute(statement))


def _share(row: Any) -> ShareInfo:
    return ShareInfo(
        row.id, row.image_id, row.user_id, row.created_at, row.expires_at, row.revoked_at
    )


class SqlShareStore:
    def __init__(self, engine: AsyncEngine, runner: TransactionRunner | None = None) -> None:
        self._db = runner or TransactionRunner(engine)

    async def add(self, share: ShareInfo) -> None:
        values = {
            "id": share.id,
            "image_id": share.image_id,
            "user_id": share.user_id,
            "created_at": share.created_at,
            "expires_at": share.expires_at,
            "revoked_at": share.revoked_at,
        }
        await self._db.write(lambda connection: connection.execute(insert(SHARES), [values]))

    async def get(self, share_id: uuid.UUID) -> ShareInfo | None:
        query = select(SHARES).where(SHARES.c.id == share_id)

        def run(connection: Connection) -> ShareInfo | None:
            row = connection.execute(query).first()
            return _share(row) if row else None

        return await self._db.read(run)

    async def for_image(self, image_id: uuid.UUID) -> list[ShareInfo]:
        query = (
            select(SHARES).where(SHARES.c.image_id == image_id).order_by(SHARES.c.created_at.desc())
        )
        return await self._db.read(
            lambda connection: [_share(row) for row in connection.execute(query).all()]
        )

    async def revoke(self, share_id: uuid.UUID, now: datetime) -> ShareInfo | None:
        statement = (
            update(SHARES)
            .where(SHARES.c.id == share_id, SHARES.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )

        def run(connection: Connection) -> ShareInfo | None:
            connection.execute(statement)
            row = connection.execute(select(SHARES).where(SHARES.c.id == share_id)).first()
            return _share(row) if row else None

        return await self._db.write(run)
