"""The composition root: the one place that chooses implementations and wires them together."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import aiohttp
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.brand.registry import PackRegistry
from caverna.config import Settings
from caverna.db.engine import create_engine, is_sqlite
from caverna.db.migrate import current_revision, upgrade_engine
from caverna.db.prompt_cache import SqlPromptCacheStore
from caverna.prompting.engine import PromptEngine
from caverna.providers.base import ImageProvider
from caverna.providers.comfyui import ComfyUIConfig, ComfyUIProvider
from caverna.providers.http import HttpSettings, new_session
from caverna.providers.latency import WithLatency
from caverna.providers.metrics import ProviderMetrics
from caverna.providers.midjourney import MidjourneyConfig, MidjourneyProvider
from caverna.providers.openai import OpenAIConfig, OpenAIProvider
from caverna.providers.preview import PreviewProvider
from caverna.providers.pricing import DEFAULT_PRICES, PriceTable
from caverna.providers.resilience import (
    BreakerSettings,
    CircuitBreaker,
    ResilientProvider,
    RetrySettings,
)
from caverna.providers.sdwebui import SDWebUIConfig, SDWebUIProvider
from caverna.providers.stability import StabilityConfig, StabilityProvider
from caverna.queue.sql import SqlJobStore
from caverna.services.generation import GenerationService, SubmitOptions
from caverna.services.processing import JobProcessor, ProcessingOptions
from caverna.services.prompt_cache import CachedCompiler
from caverna.storage.base import ObjectStore
from caverna.storage.factory import store_from_url
from caverna.worker.loop import Worker, WorkerOptions

HEAD_REVISION = "0002"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Container:
    settings: Settings
    packs: PackRegistry
    prompts: PromptEngine


def build_container(
    settings: Settings | None = None,
    *,
    extra_pack_paths: Iterable[Path] = (),
    packs: PackRegistry | None = None,
) -> Container:
    settings = settings or Settings()
    registry = packs or PackRegistry([*extra_pack_paths, *settings.pack_paths])
    return Container(settings=settings, packs=registry, prompts=PromptEngine(registry))


@dataclass
class Runtime:
    """Everything that needs an event loop and connections; close it when done."""

    container: Container
    engine: AsyncEngine
    jobs: SqlJobStore
    compiler: CachedCompiler
    cache: SqlPromptCacheStore
    store: ObjectStore
    providers: dict[str, ImageProvider]
    generation: GenerationService
    processor: JobProcessor
    image_pool: Executor | None = None
    http: aiohttp.ClientSession | None = None
    metrics: ProviderMetrics | None = None
    _workers: list[Worker] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.container.settings

    def worker(self, *, concurrency: int | None = None, worker_id: str | None = None) -> Worker:
        settings = self.settings
        worker = Worker(
            jobs=self.jobs,
            processor=self.processor,
            providers=list(self.providers),
            options=WorkerOptions(
                concurrency=concurrency or settings.worker_concurrency,
                per_provider=settings.provider_limits,
                lease_seconds=settings.lease_seconds,
            ),
            worker_id=worker_id,
        )
        self._workers.append(worker)
        return worker

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.image_pool is not None:
            self.image_pool.shutdown(wait=True, cancel_futures=True)
        await self.cache.flush()
        await self.jobs.close()
        await self.store.close()
        await self.engine.dispose()


class DatabaseNotMigrated(RuntimeError):
    """The scale-out database is behind the code: an operator runs `caverna db upgrade`."""


async def open_runtime(
    container: Container,
    *,
    providers: Mapping[str, ImageProvider] | None = None,
    store: ObjectStore | None = None,
    clock: object = None,
    processing: ProcessingOptions | None = None,
) -> Runtime:
    settings = container.settings
    now = clock if callable(clock) else utcnow
    engine = create_engine(settings.resolved_database_url)
    try:
        await _prepare_database(engine, settings.resolved_database_url)
    except BaseException:
        await engine.dispose()
        raise
    jobs = SqlJobStore(engine, clock=now)
    cache = SqlPromptCacheStore(engine)
    compiler = CachedCompiler(container.prompts, cache, settings.prompt_cache_ttl_seconds)
    object_store = store or store_from_url(settings.storage_url, data_dir=settings.data_dir)
    http = new_session(HttpSettings(read_timeout=settings.provider_timeout_seconds))
    metrics = ProviderMetrics()
    available = (
        dict(providers)
        if providers is not None
        else _resilient(_providers(settings, http), settings, metrics)
    )
    generation = GenerationService(
        prompts=container.prompts,
        compiler=compiler,
        jobs=jobs,
        providers=list(available),
        clock=now,
        options=SubmitOptions(
            max_attempts=settings.max_attempts, delivery_format=settings.delivery_format
        ),
    )
    image_pool = _image_pool(settings)
    processor = JobProcessor(
        jobs=jobs,
        compiler=compiler,
        providers=available,
        store=object_store,
        clock=now,
        options=processing
        or ProcessingOptions(
            lease_seconds=settings.lease_seconds,
            failover=tuple(available) if settings.failover else (),
        ),
        images=image_pool,
    )
    return Runtime(
        container,
        engine,
        jobs,
        compiler,
        cache,
        object_store,
        available,
        generation,
        processor,
        image_pool,
        http,
        metrics,
    )


def _resilient(
    providers: Mapping[str, ImageProvider], settings: Settings, metrics: ProviderMetrics
) -> dict[str, ImageProvider]:
    """Every provider behind its own breaker, retry policy, timeout and concurrency limit."""
    limits = settings.provider_limits
    return {
        name: ResilientProvider(
            provider,
            breaker=CircuitBreaker(
                name,
                BreakerSettings(settings.breaker_failures, settings.breaker_open_seconds),
            ),
            retry=RetrySettings(
                attempts=settings.provider_retries + 1,
                budget_seconds=settings.provider_retry_budget_seconds,
                call_timeout=settings.provider_timeout_seconds,
            ),
            concurrency=limits.get(name, settings.worker_concurrency),
            observe=metrics.observe,
        )
        for name, provider in providers.items()
    }


def _image_pool(settings: Settings) -> Executor | None:
    """Processes start on first use (spawned: forking a process with threads is unsafe)."""
    count = settings.image_processes
    if count == 0:
        return None
    workers = count if count > 0 else (os.cpu_count() or 1)
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


async def _prepare_database(engine: AsyncEngine, url: str) -> None:
    """The embedded database migrates itself; a shared one must be migrated on purpose."""
    if is_sqlite(url):
        await upgrade_engine(engine)
        return
    revision = await current_revision(engine)
    if revision != HEAD_REVISION:
        raise DatabaseNotMigrated(
            f"the database is at revision {revision or 'none'}, the code needs {HEAD_REVISION}: "
            "run `caverna db upgrade`"
        )


def _providers(settings: Settings, session: aiohttp.ClientSession) -> dict[str, ImageProvider]:
    """Configured providers in failover order; the offline preview is always available."""
    prices = DEFAULT_PRICES
    if settings.price_table:
        prices = DEFAULT_PRICES.merged(PriceTable.from_json(settings.price_table))
    timeout = settings.provider_timeout_seconds
    preview: ImageProvider = PreviewProvider()
    if settings.preview_latency_ms:
        preview = WithLatency(preview, settings.preview_latency_ms)
    built: dict[str, Callable[[], ImageProvider]] = {
        "preview": lambda: preview,
        "openai": lambda: OpenAIProvider(
            OpenAIConfig(
                api_key=_secret(settings.openai_api_key),
                base_url=settings.openai_base_url,
                timeout=timeout,
            ),
            session,
            prices,
        ),
        "stability": lambda: StabilityProvider(
            StabilityConfig(
                api_key=_secret(settings.stability_api_key),
                base_url=settings.stability_base_url,
                timeout=timeout,
            ),
            session,
            prices,
        ),
        "midjourney": lambda: MidjourneyProvider(
            MidjourneyConfig(
                base_url=settings.midjourney_url,
                secret=_secret(settings.midjourney_secret) or None,
                timeout=timeout,
            ),
            session,
        ),
        "sdwebui": lambda: SDWebUIProvider(
            SDWebUIConfig(
                base_url=settings.sdwebui_url,
                username=settings.sdwebui_user or None,
                password=_secret(settings.sdwebui_password) or None,
                timeout=timeout,
            ),
            session,
        ),
        "comfyui": lambda: ComfyUIProvider(
            ComfyUIConfig(base_url=settings.comfyui_url, timeout=timeout), session
        ),
    }
    available = {name: built[name]() for name in settings.provider_order}
    available.setdefault("preview", preview)
    return available


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""
