"""Web sessions on SQLAlchemy (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.engine import TransactionRunner
from caverna.db.models import WebSessionRow
from caverna.services.web_sessions import StoredSession

SESSIONS: Table = WebSessionRow.__table__  # type: ignore[assignment]


class SqlWebSessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._db = TransactionRunner(engine)

    async def add(
        self, token_hash: str, user_id: str, csrf_token: str, now: datetime, expires_at: datetime
    ) -> None:
        values = {
            "token_hash": token_hash,
            "user_id": user_id,
            "csrf_token": csrf_token,
            "created_at": now,
            "expires_at": expires_at,
        }

        def run(connection: Connection) -> None:
            # expired sessions go as new ones come: the table never grows without bound
            connection.execute(delete(SESSIONS).where(SESSIONS.c.expires_at < now))
            connection.execute(insert(SESSIONS), [values])

        await self._db.write(run)

    async def get(self, token_hash: str) -> StoredSession | None:
        query = select(SESSIONS).where(SESSIONS.c.token_hash == token_hash)

        def run(connection: Connection) -> StoredSession | None:
            row = connection.execute(query).first()
            return StoredSession(row.user_id, row.csrf_token, row.expires_at) if row else None

        return await self._db.read(run)

    async def delete(self, token_hash: str) -> None:
        statement = delete(SESSIONS).where(SESSIONS.c.token_hash == token_hash)
        await self._db.write(lambda connection: connection.execute(statement))

    def close(self) -> None:
        self._db.close()
