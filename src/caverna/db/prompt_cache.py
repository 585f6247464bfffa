"""The prompt cache table, with hit and miss counters shared by every process."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from caverna.db.engine import session_factory
from caverna.db.models import CounterRow, PromptCacheRow
from caverna.services.prompt_cache import CacheStats

HITS = "prompt_cache.hits"
MISSES = "prompt_cache.misses"


class SqlPromptCacheStore:
    def __init__(self, engine: AsyncEngine):
        self._sessions = session_factory(engine)
        self._postgres = engine.dialect.name == "postgresql"

    def _upsert(self) -> Any:
        return pg_insert if self._postgres else sqlite_insert

    async def _count(self, session: AsyncSession, name: str) -> None:
        insert = self._upsert()
        statement = insert(CounterRow).values(name=name, value=1)
        statement = statement.on_conflict_do_update(
            index_elements=[CounterRow.name], set_={"value": CounterRow.value + 1}
        )
        await session.execute(statement)

    async def get(self, key: str, now: datetime) -> dict[str, Any] | None:
        async with self._sessions() as session, session.begin():
            row = await session.get(PromptCacheRow, key)
            if row is None or row.expires_at <= now:
                await self._count(session, MISSES)
                return None
            await session.execute(
                update(PromptCacheRow)
                .where(PromptCacheRow.key == key)
                .values(hits=PromptCacheRow.hits + 1, last_hit_at=now)
            )
            await self._count(session, HITS)
            return dict(row.compiled)

    async def put(
        self,
        key: str,
        dialect: str,
        template_version: str,
        compiled: dict[str, Any],
        now: datetime,
        ttl_seconds: float,
    ) -> None:
        insert = self._upsert()
        values = {
            "key": key,
            "dialect": dialect,
            "template_version": template_version,
            "compiled": compiled,
            "hits": 0,
            "created_at": now,
            "last_hit_at": None,
            "expires_at": now + timedelta(seconds=ttl_seconds),
        }
        statement = insert(PromptCacheRow).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[PromptCacheRow.key],
            set_={k: v for k, v in values.items() if k != "key"},
        )
        async with self._sessions() as session, session.begin():
            await session.execute(statement)

    async def stats(self, now: datetime) -> CacheStats:
        async with self._sessions() as session:
            by_dialect = {
                dialect: int(n)
                for dialect, n in (
                    await session.execute(
                        select(PromptCacheRow.dialect, func.count()).group_by(
                            PromptCacheRow.dialect
                        )
                    )
                ).all()
            }
            expired = await session.scalar(
                select(func.count()).where(PromptCacheRow.expires_at <= now)
            )
            counters = {
                row.name: row.value
                for row in (
                    await session.execute(
                        select(CounterRow).where(CounterRow.name.in_([HITS, MISSES]))
                    )
                ).scalars()
            }
        return CacheStats(
            entries=sum(by_dialect.values()),
            expired=int(expired or 0),
            hits=counters.get(HITS, 0),
            misses=counters.get(MISSES, 0),
            by_dialect=by_dialect,
        )

    async def prune(self, now: datetime, *, everything: bool = False) -> int:
        statement = delete(PromptCacheRow)
        if not everything:
            statement = statement.where(PromptCacheRow.expires_at <= now)
        async with self._sessions() as session, session.begin():
            result = await session.execute(statement)
            return int(result.rowcount)  # type: ignore[attr-defined]
