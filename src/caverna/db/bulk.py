"""Bulk operations on SQLAlchemy: the claim is one conditional UPDATE, like the job queue's."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.engine import TransactionRunner
from caverna.db.models import BulkOperationRow
from caverna.services.bulk import BulkInfo

BULK: Table = BulkOperationRow.__table__  # type: ignore[assignment]


def to_info(row: Any) -> BulkInfo:
    return BulkInfo(
        id=row.id,
        actor=row.actor,
        action=row.action,
        filters=dict(row.filters or {}),
        status=row.status,
        total=row.total,
        done=row.done,
        failed=row.failed,
        error=row.error,
        position=row.position,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


class SqlBulkStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._db = TransactionRunner(engine)
        self._postgres = engine.dialect.name == "postgresql"

    async def add(self, operation: BulkInfo) -> None:
        values = {
            "id": operation.id,
            "actor": operation.actor,
            "action": operation.action,
            "filters": operation.filters,
            "status": operation.status,
            "total": operation.total,
            "done": operation.done,
            "failed": operation.failed,
            "created_at": operation.created_at,
        }
        await self._db.write(lambda connection: connection.execute(insert(BULK), [values]))

    async def get(self, operation_id: uuid.UUID) -> BulkInfo | None:
        query = select(BULK).where(BULK.c.id == operation_id)

        def run(connection: Connection) -> BulkInfo | None:
            row = connection.execute(query).first()
            return to_info(row) if row else None

        return await self._db.read(run)

    async def recent(self, limit: int) -> list[BulkInfo]:
        query = select(BULK).order_by(BULK.c.created_at.desc()).limit(limit)
        return await self._db.read(
            lambda connection: [to_info(row) for row in connection.execute(query).all()]
        )

    async def claim(self, owner: str, now: datetime, lease_until: datetime) -> BulkInfo | None:
        claimable = or_(
            BULK.c.status == "queued",
            (BULK.c.status == "running") & (BULK.c.lease_expires_at < now),
        )
        candidate = (
            select(BULK.c.id)
            .where(claimable)
            .order_by(BULK.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            update(BULK)
            .where(BULK.c.id == candidate, claimable)
            .values(
                status="running",
                lease_owner=owner,
                lease_expires_at=lease_until,
                started_at=func.coalesce(BULK.c.started_at, now),
            )
            .returning(*BULK.c)
        )

        def run(connection: Connection) -> BulkInfo | None:
            row = connection.execute(statement).first()
            return to_info(row) if row else None

        return await self._db.write(run)

    async def save(
        self,
        operation_id: uuid.UUID,
        owner: str,
        *,
        total: int,
        done: int,
        failed: int,
        position: dict[str, Any] | None,
        lease_until: datetime,
    ) -> bool:
        statement = (
            update(BULK)
            .where(
                BULK.c.id == operation_id,
                BULK.c.lease_owner == owner,
                BULK.c.status == "running",
            )
            .values(
                total=total,
                done=done,
                failed=failed,
                position=position,
                lease_expires_at=lease_until,
            )
        )
        return await self._db.write(lambda connection: bool(connection.execute(statement).rowcount))

    async def finish(
        self, operation_id: uuid.UUID, owner: str, status: str, error: str | None, now: datetime
    ) -> bool:
        statement = (
            update(BULK)
            .where(BULK.c.id == operation_id, BULK.c.lease_owner == owner)
            .values(
                status=status,
                error=error,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        return await self._db.write(lambda connection: bool(connection.execute(statement).rowcount))

    def close(self) -> None:
        self._db.close()
