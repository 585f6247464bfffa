"""The webhook columns of the image rows on SQLAlchemy.

The claim is one `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`, like the job queue's:
SQLite serialises writers (BEGIN IMMEDIATE), PostgreSQL's sub-select skips rows another claimer
has locked. A cheap read runs first, so an idle poll never takes SQLite's write lock.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.engine import TransactionRunner
from caverna.db.models import ImageRow
from caverna.db.types import UTCDateTime
from caverna.services.webhooks import CLAIMABLE, PENDING, DueWebhook, WebhookState


def _due(now: datetime) -> list[ColumnElement[bool]]:
    at_now = bindparam("now", now, type_=UTCDateTime())
    return [
        ImageRow.webhook_status == PENDING,
        or_(ImageRow.webhook_next_at.is_(None), ImageRow.webhook_next_at <= at_now),
        ImageRow.status.in_(CLAIMABLE),
    ]


def claim_statement(now: datetime, lease_until: datetime, limit: int) -> Any:
    """The atomic claim of up to `limit` due webhooks, as a statement."""
    candidates = (
        select(ImageRow.id)
        .where(*_due(now))
        .order_by(ImageRow.webhook_next_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        update(ImageRow)
        .where(ImageRow.id.in_(candidates), *_due(now))
        .values(webhook_attempts=ImageRow.webhook_attempts + 1, webhook_next_at=lease_until)
        .returning(
            ImageRow.id,
            ImageRow.callback_url,
            ImageRow.status,
            ImageRow.webhook_attempts,
            ImageRow.error_code,
            ImageRow.error_message,
            ImageRow.sequence_id,
            ImageRow.frame_id,
        )
    )


class SqlWebhookStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._db = TransactionRunner(engine)

    async def attach(self, image_id: uuid.UUID, url: str, now: datetime) -> bool:
        add = (
            update(ImageRow)
            .where(ImageRow.id == image_id, ImageRow.callback_url.is_(None))
            .values(
                callback_url=url,
                webhook_status=PENDING,
                webhook_attempts=0,
                webhook_next_at=now,
                webhook_error=None,
            )
        )
        current = select(ImageRow.callback_url).where(ImageRow.id == image_id)

        def run(connection: Connection) -> bool:
            connection.execute(add)
            return connection.execute(current).scalar_one_or_none() == url

        return await self._db.write(run)

    async def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[DueWebhook]:
        probe = select(ImageRow.id).where(*_due(now)).limit(1)
        if await self._db.read(lambda connection: connection.execute(probe).first()) is None:
            return []
        statement = claim_statement(now, lease_until, limit)

        def run(connection: Connection) -> list[DueWebhook]:
            return [
                DueWebhook(
                    image_id=row.id,
                    url=row.callback_url,
                    job_status=row.status,
                    attempt=row.webhook_attempts,
                    error_code=row.error_code,
                    error_message=row.error_message,
                    sequence_id=row.sequence_id,
                    frame_id=row.frame_id,
                )
                for row in connection.execute(statement).all()
            ]

        return await self._db.write(run)

    async def settle(
        self,
        image_id: uuid.UUID,
        attempt: int,
        *,
        status: str,
        error: str | None,
        next_at: datetime | None,
    ) -> bool:
        statement = (
            update(ImageRow)
            .where(
                ImageRow.id == image_id,
                ImageRow.webhook_status == PENDING,
                ImageRow.webhook_attempts == attempt,
            )
            .values(
                webhook_status=status,
                webhook_error=error[:2000] if error is not None else None,
                webhook_next_at=next_at,
            )
        )
        return await self._db.write(lambda connection: bool(connection.execute(statement).rowcount))

    async def get(self, image_id: uuid.UUID) -> WebhookState | None:
        query = select(
            ImageRow.callback_url,
            ImageRow.webhook_status,
            ImageRow.webhook_attempts,
            ImageRow.webhook_next_at,
            ImageRow.webhook_error,
        ).where(ImageRow.id == image_id)

        def run(connection: Connection) -> WebhookState | None:
            row = connection.execute(query).first()
            if row is None:
                return None
            return WebhookState(
                url=row.callback_url,
                status=row.webhook_status,
                attempts=int(row.webhook_attempts or 0),
                next_at=row.webhook_next_at,
                error=row.webhook_error,
            )

        return await self._db.read(run)

    def close(self) -> None:
        self._db.close()
