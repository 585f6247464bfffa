"""The prompt cache: compiled prompts kept by (params_hash, template_version, dialect).

Validation always runs (it is cheap and guards every request); the cache spares the compile and
keeps a durable record of exactly what each provider was sent. Because template_version changes
with any edit of the pack or of a compiler, a stale prompt can never be served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from caverna.domain.problems import InvalidParametersError
from caverna.prompting.builder import variant_for
from caverna.prompting.dialects.base import CompiledPrompt
from caverna.prompting.dialects.registry import DIALECTS
from caverna.prompting.engine import PromptEngine, RawParams, compile_resolved, length_problems
from caverna.prompting.spec import template_version


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    expired: int
    hits: int
    misses: int
    by_dialect: Mapping[str, int]

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class PromptCacheStore(Protocol):
    async def get(self, key: str, now: datetime) -> dict[str, Any] | None:
        """The compiled prompt under `key` if present and not expired; counts a hit or a miss."""

    async def put(
        self,
        key: str,
        dialect: str,
        template_version: str,
        compiled: dict[str, Any],
        now: datetime,
        ttl_seconds: float,
    ) -> None:
        """Store (or replace) an entry."""

    async def stats(self, now: datetime) -> CacheStats:
        """Entry counts and hit/miss counters."""

    async def prune(self, now: datetime, *, everything: bool = False) -> int:
        """Delete expired entries (or all); returns how many."""


def cache_key(
    params_hash: str, template_version: str, dialect: str, variant: str | None = None
) -> str:
    # the A/B variant is appended only when the pack has variants: other keys stay as they were
    tail = "" if variant is None else f"|{variant}"
    return hashlib.sha256(f"{params_hash}|{template_version}|{dialect}{tail}".encode()).hexdigest()


class CachedCompiler:
    def __init__(self, engine: PromptEngine, store: PromptCacheStore, ttl_seconds: float):
        self.engine = engine
        self.store = store
        self.ttl_seconds = ttl_seconds

    async def compile(self, raw: RawParams, dialect: str, now: datetime) -> CompiledPrompt:
        pack, resolved = self.engine.resolve(raw, dialect)
        spec_dialect = DIALECTS[dialect]
        version = template_version(pack)
        key = cache_key(resolved.params_hash, version, dialect, variant_for(pack, resolved))
        cached = await self.store.get(key, now)
        if cached is not None:
            return CompiledPrompt.from_dict(cached)
        compiled = compile_resolved(pack, resolved, spec_dialect)
        problems = length_problems(compiled, spec_dialect)
        if problems:
            raise InvalidParametersError(tuple(problems), "the prompt is too long for the provider")
        await self.store.put(key, dialect, version, compiled.to_dict(), now, self.ttl_seconds)
        return compiled
