"""The prompt cache table, with hit and miss counters shared by every process.

Lookups are reads, served first from a small in-process LRU (entries never change under a key,
whose template_version pins the pack and engine, so the copy cannot go stale before it expires).
Hits and misses are counted in memory and written in batches (every 64 lookups or 2 seconds,
and before stats are read), so a cache hit never takes the write lock. A batch due during a
lookup is written in the background: the lookup sits on a job's critical path, the counters
do not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from caverna.db.engine import reading, session_factory, writing
from caverna.db.models import CounterRow, PromptCacheRow
from caverna.services.prompt_cache import CacheStats

log = logging.getLogger(__name__)

HITS = "prompt_cache.hits"
MISSES = "prompt_cache.misses"
FLUSH_EVERY = 64
FLUSH_SECONDS = 2.0
MEMORY_ENTRIES = 2048


class SqlPromptCacheStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._sessions = session_factory(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._hits: Counter[str] = Counter()
        self._last_hit: dict[str, datetime] = {}
        self._misses = 0
        self._last_flush = time.monotonic()
        self._memory: OrderedDict[str, tuple[dict[str, Any], datetime]] = OrderedDict()
        self._flushing: asyncio.Task[None] | None = None

    def _remember(self, key: str, compiled: dict[str, Any], expires_at: datetime) -> None:
        self._memory[key] = (compiled, expires_at)
        self._memory.move_to_end(key)
        while len(self._memory) > MEMORY_ENTRIES:
            self._memory.popitem(last=False)

    def _upsert(self) -> Any:
        return pg_insert if self._postgres else sqlite_insert

    async def _add_counter(self, session: AsyncSession, name: str, amount: int) -> None:
        statement = self._upsert()(CounterRow).values(name=name, value=amount)
        statement = statement.on_conflict_do_update(
            index_elements=[CounterRow.name], set_={"value": CounterRow.value + amount}
        )
        await session.execute(statement)

    async def get(self, key: str, now: datetime) -> dict[str, Any] | None:
        compiled: dict[str, Any] | None = None
        remembered = self._memory.get(key)
        if remembered is not None and remembered[1] > now:
            compiled = remembered[0]
            self._memory.move_to_end(key)
        else:
            async with reading(self._sessions) as session:
                row = await session.get(PromptCacheRow, key)
                if row is not None and row.expires_at > now:
                    compiled = dict(row.compiled)
                    self._remember(key, compiled, row.expires_at)
        if compiled is None:
            self._misses += 1
        else:
            self._hits[key] += 1
            self._last_hit[key] = now
        pending = self._misses + sum(self._hits.values())
        if pending >= FLUSH_EVERY or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self._flush_in_background()
        return compiled

    def _flush_in_background(self) -> None:
        if self._flushing is not None and not self._flushing.done():
            return  # the counts keep accumulating for the next batch
        self._flushing = asyncio.create_task(self._flush_logged())

    async def _flush_logged(self) -> None:
        try:
            await self._write_counts()
        except Exception:  # counters are statistics: losing one batch must not fail a job
            log.exception("prompt cache counters could not be written")

    async def flush(self) -> None:
        """Write the counted hits and misses, after any batch already being written."""
        if self._flushing is not None:
            await asyncio.wait([self._flushing])
            self._flushing = None
        await self._write_counts()

    async def _write_counts(self) -> None:
        hits, last_hit, misses = self._hits, self._last_hit, self._misses
        self._hits, self._last_hit, self._misses = Counter(), {}, 0
        self._last_flush = time.monotonic()
        if not hits and not misses:
            return
        async with writing(self._engine, self._sessions) as session:
            for key, count in sorted(hits.items()):
                await session.execute(
                    update(PromptCacheRow)
                    .where(PromptCacheRow.key == key)
                    .values(hits=PromptCacheRow.hits + count, last_hit_at=last_hit[key])
                )
            if hits:
                await self._add_counter(session, HITS, sum(hits.values()))
            if misses:
                await self._add_counter(session, MISSES, misses)

    async def put(
        self,
        key: str,
        dialect: str,
        template_version: str,
        compiled: dict[str, Any],
        now: datetime,
        ttl_seconds: float,
    ) -> None:
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
        statement = self._upsert()(PromptCacheRow).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[PromptCacheRow.key],
            set_={k: v for k, v in values.items() if k != "key"},
        )
        async with writing(self._engine, self._sessions) as session:
            await session.execute(statement)
        self._remember(key, compiled, values["expires_at"])  # type: ignore[arg-type]

    async def stats(self, now: datetime) -> CacheStats:
        await self.flush()
        async with reading(self._sessions) as session:
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
        await self.flush()
        self._memory.clear()
        statement = delete(PromptCacheRow)
        if not everything:
            statement = statement.where(PromptCacheRow.expires_at <= now)
        async with writing(self._engine, self._sessions) as session:
            result = await session.execute(statement)
            return int(result.rowcount)  # type: ignore[attr-defined]
