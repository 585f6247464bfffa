"""The composition root: the one place that chooses implementations and wires them together."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.brand.registry import PackRegistry
from caverna.config import Settings
from caverna.db.accounts import SqlAccountStore, SqlAuditStore
from caverna.db.api_records import SqlIdempotencyStore, SqlShareStore
from caverna.db.bulk import SqlBulkStore
from caverna.db.engine import TransactionRunner, create_engine, is_sqlite
from caverna.db.image_search import SqlImageSearch
from caverna.db.migrate import current_revision, upgrade_engine
from caverna.db.prompt_cache import SqlPromptCacheStore
from caverna.db.web_sessions import SqlWebSessionStore
from caverna.db.webhooks import SqlWebhookStore
from caverna.imaging.pool import start_image_process
from caverna.moderation_openai import OpenAIModerationConfig, OpenAIModerator
from caverna.prompting.engine import PromptEngine
from caverna.providers.base import ImageProvider
from caverna.providers.comfyui import ComfyUIConfig, ComfyUIProvider
from caverna.providers.http import HttpSettings, new_session
from caverna.providers.intake import IntakeGate
from caverna.providers.latency import WithLatency
from caverna.providers.metrics import ProviderMetrics
from caverna.providers.midjourney import MidjourneyConfig, MidjourneyProvider
from caverna.providers.openai import OpenAIConfig, OpenAIProvider
from caverna.providers.preview import PreviewProvider
from caverna.providers.pricing import DEFAULT_PRICES, PriceTable
from caverna.providers.ratelimit import ProviderRateLimit
from caverna.providers.resilience import (
    BreakerSettings,
    CircuitBreaker,
    ResilientProvider,
    RetrySettings,
)
from caverna.providers.sdwebui import SDWebUIConfig, SDWebUIProvider
from caverna.providers.stability import StabilityConfig, StabilityProvider
from caverna.queue.sql import SqlJobStore
from caverna.ratelimiting import RateLimiter
from caverna.services.accounts import AccountService, AuditLog
from caverna.services.bulk import BulkOperations
from caverna.services.consistency import ConsistencyPass, RerollPolicy, Rerolls
from caverna.services.generation import GenerationService, SubmitOptions
from caverna.services.idempotency import Idempotency
from caverna.services.image_actions import ImageActions
from caverna.services.images import ImageHistory
from caverna.services.links import LinkSigner
from caverna.services.processing import JobProcessor, ProcessingOptions
from caverna.services.prompt_cache import CachedCompiler
from caverna.services.quotas import QuotaDefaults, Quotas
from caverna.services.safety import Moderator, SafetyCheck
from caverna.services.sharing import Sharing
from caverna.services.web_sessions import WebSessions
from caverna.services.webhooks import CallbackPolicy, WebhookDispatcher, WebhookOptions
from caverna.storage.base import ObjectStore
from caverna.storage.factory import store_from_url
from caverna.webhooks_http import HttpWebhookSender
from caverna.worker.loop import Worker, WorkerOptions

HEAD_REVISION = "0008"
# what the image pool's tasks run: image processing, preview drawing, the derivatives pass
IMAGE_PROCESS_MODULES = (
    "caverna.imaging",
    "caverna.providers.preview",
    "caverna.services.consistency",
)


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
    signer: LinkSigner = field(default_factory=lambda: LinkSigner(secrets.token_bytes(32)))
    clock: Callable[[], datetime] = utcnow
    _workers: list[Worker] = field(default_factory=list)
    accounts: AccountService = field(kw_only=True)
    audit: AuditLog = field(kw_only=True)
    accounts_db: TransactionRunner | None = field(default=None, kw_only=True)
    history: ImageHistory = field(kw_only=True)
    # request rates per provider, and per API key for the HTTP API: one limiter, one storage
    rate_limiter: RateLimiter = field(kw_only=True)
    idempotency: Idempotency = field(kw_only=True)
    sharing: Sharing = field(kw_only=True)
    quotas: Quotas = field(kw_only=True)
    safety: SafetyCheck = field(kw_only=True)
    actions: ImageActions = field(kw_only=True)
    bulk: BulkOperations = field(kw_only=True)
    bulk_store: SqlBulkStore | None = field(default=None, kw_only=True)
    web_sessions: WebSessions = field(kw_only=True)
    web_session_store: SqlWebSessionStore | None = field(default=None, kw_only=True)
    webhooks: WebhookDispatcher = field(kw_only=True)
    webhook_store: SqlWebhookStore | None = field(default=None, kw_only=True)
    consistency: ConsistencyPass | None = field(default=None, kw_only=True)

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

    def background(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """The housekeeping loops that run wherever workers run (admin bulk operations, and
        webhooks: sent by processes that also finish jobs, never by API-only replicas)."""
        return [
            asyncio.create_task(self.bulk.run(stop), name="bulk-operations"),
            asyncio.create_task(self.webhooks.run(stop), name="webhooks"),
        ]

    async def warm_image_pool(self) -> set[int]:
        """Start every image process now instead of on the first images.

        The pool spawns a process when a task finds none idle, so one task per process, sent
        at once, starts them all. Serving and worker processes call this before they take
        work: otherwise the first seconds under load go to spawning and importing while the
        queue grows. Returns the pids that answered (empty without a process pool).
        """
        pool = self.image_pool
        if not isinstance(pool, ProcessPoolExecutor):
            return set()
        loop = asyncio.get_running_loop()
        started = functools.partial(start_image_process, IMAGE_PROCESS_MODULES)
        pids = await asyncio.gather(
            *(loop.run_in_executor(pool, started) for _ in range(_pool_size(self.settings)))
        )
        return set(pids)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.image_pool is not None:
            self.image_pool.shutdown(wait=True, cancel_futures=True)
        await self.cache.flush()
        await self.jobs.close()
        self.history.close()
        if self.bulk_store is not None:
            self.bulk_store.close()
        if self.web_session_store is not None:
            self.web_session_store.close()
        await self.webhooks.aclose()
        if self.webhook_store is not None:
            self.webhook_store.close()
        if self.accounts_db is not None:
            self.accounts_db.close()
        await self.store.close()
        await self.rate_limiter.aclose()
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
    accounts_db = TransactionRunner(engine)
    audit = AuditLog(SqlAuditStore(accounts_db), now)
    accounts = AccountService(SqlAccountStore(accounts_db), audit, now)
    cache = SqlPromptCacheStore(engine)
    compiler = CachedCompiler(container.prompts, cache, settings.prompt_cache_ttl_seconds)
    object_store = store or store_from_url(settings.storage_url, data_dir=settings.data_dir)
    http = new_session(
        HttpSettings(
            read_timeout=settings.provider_timeout_seconds, max_connections=_connections(settings)
        )
    )
    metrics = ProviderMetrics()
    rate_limiter = RateLimiter(settings.redis_url or None)
    image_pool = _image_pool(settings)
    available = (
        dict(providers)
        if providers is not None
        else _resilient(_providers(settings, http, image_pool), settings, metrics, rate_limiter)
    )
    webhook_store = SqlWebhookStore(engine)
    webhooks = WebhookDispatcher(
        store=webhook_store,
        sender=HttpWebhookSender(
            timeout_seconds=settings.webhook_timeout_seconds,
            allow_private=settings.webhook_allow_private,
        ),
        policy=CallbackPolicy.from_setting(
            settings.webhook_allowed_hosts, allow_private=settings.webhook_allow_private
        ),
        secret=webhook_secret(settings),
        clock=now,
        options=WebhookOptions(
            max_attempts=settings.webhook_max_attempts,
            backoff_seconds=settings.webhook_backoff_seconds,
            lease_seconds=settings.webhook_timeout_seconds + 60.0,
        ),
    )
    quotas = Quotas(
        jobs, accounts, QuotaDefaults(settings.quota_daily_images, settings.quota_monthly_usd), now
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
        webhooks=webhooks,
        quotas=quotas,
    )
    processor = JobProcessor(
        jobs=jobs,
        compiler=compiler,
        providers=available,
        store=object_store,
        clock=now,
        options=processing
        or ProcessingOptions(
            lease_seconds=settings.lease_seconds,
            storage_retry_seconds=settings.storage_retry_seconds,
            failover=tuple(available) if settings.failover else (),
        ),
        images=image_pool,
        intake=IntakeGate(settings.image_intake_slots),
    )
    consistency = ConsistencyPass(
        store=jobs,
        packs=container.packs,
        rerolls=Rerolls(
            store=jobs,
            generation=generation,
            policy=RerollPolicy(
                settings.reroll_below, settings.reroll_max_attempts, settings.reroll_budget_usd
            ),
        ),
    )
    consistency.attach(processor.derivatives)
    signer = LinkSigner(load_secret(settings))
    history = ImageHistory(SqlImageSearch(engine), container.prompts, pack_id=settings.default_pack)
    actions = ImageActions(
        jobs=jobs,
        generation=generation,
        store=object_store,
        worker_concurrency=settings.worker_concurrency,
    )
    bulk_store = SqlBulkStore(engine)
    web_session_store = SqlWebSessionStore(engine)
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
        signer=signer,
        clock=now,
        idempotency=Idempotency(SqlIdempotencyStore(engine), now),
        sharing=Sharing(SqlShareStore(engine), signer, now),
        quotas=quotas,
        safety=SafetyCheck(
            container.packs,
            _moderator(settings, http),
            fail_open=settings.moderation_fail_open,
        ),
        accounts=accounts,
        audit=audit,
        accounts_db=accounts_db,
        history=history,
        actions=actions,
        bulk=BulkOperations(
            store=bulk_store,
            history=history,
            actions=actions,
            audit=audit,
            user_ids=lambda: _users_with_images(jobs),
            clock=now,
            lease_seconds=settings.lease_seconds,
        ),
        bulk_store=bulk_store,
        web_sessions=WebSessions(web_session_store, accounts, now),
        web_session_store=web_session_store,
        webhooks=webhooks,
        webhook_store=webhook_store,
        rate_limiter=rate_limiter,
        consistency=consistency,
    )


async def _users_with_images(jobs: SqlJobStore) -> list[str]:
    return [row["user_id"] for row in (await jobs.breakdown())["by_user"]]


SECRET_FILE = "secret.key"


def load_secret(settings: Settings) -> bytes:
    """The signing secret: CAVERNA_SECRET_KEY, else one kept in the data folder (made once).

    Every API process must share it (links signed by one are checked by another), so a scale-out
    deployment sets CAVERNA_SECRET_KEY; the embedded mode keeps its own under the data folder.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.data_dir / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    draft = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(value)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(draft, path)  # publishes the whole file at once, or fails if one exists
    except FileExistsError:
        value = path.read_bytes().strip()
    finally:
        draft.unlink()
    return value


def webhook_secret(settings: Settings) -> bytes:
    """The key of webhook signatures: CAVERNA_WEBHOOK_SECRET, else one derived from the signing
    secret, so receivers never hold the key that signs media and share links."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value().encode()
    derived = hmac.new(load_secret(settings), b"caverna webhook signatures", hashlib.sha256)
    return derived.hexdigest().encode()


def _connections(settings: Settings) -> int:
    """Room for every provider call allowed at once, twice over (polling adapters open a second).

    A call waiting for a pooled connection runs down its connect timeout: with fewer connections
    than calls, a slow provider would look unreachable and trip its breaker.
    """
    limits = settings.provider_limits
    calls = sum(limits.get(name, settings.worker_concurrency) for name in settings.provider_order)
    return max(HttpSettings().max_connections, 2 * calls)


def _resilient(
    providers: Mapping[str, ImageProvider],
    settings: Settings,
    metrics: ProviderMetrics,
    rate_limiter: RateLimiter | None = None,
) -> dict[str, ImageProvider]:
    """Every provider behind its own breaker, retry policy, timeout and concurrency limit, and
    its request rate when one is configured."""
    limits = settings.provider_limits
    rates = settings.provider_rates if rate_limiter is not None else {}
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
            rate_limit=(
                ProviderRateLimit(rate_limiter, name, rates[name])
                if rate_limiter is not None and name in rates
                else None
            ),
        )
        for name, provider in providers.items()
    }


def _pool_size(settings: Settings) -> int:
    count = settings.image_processes
    return count if count >= 0 else (os.cpu_count() or 1)


def _image_pool(settings: Settings) -> Executor | None:
    """Processes start on first use, or at `Runtime.warm_image_pool` (spawned: forking a
    process with threads is unsafe)."""
    workers = _pool_size(settings)
    if workers == 0:
        return None
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


def _providers(
    settings: Settings, session: aiohttp.ClientSession, image_pool: Executor | None
) -> dict[str, ImageProvider]:
    """Configured providers in failover order; the offline preview is always available (and
    draws in the image pool, off the serving process's event loop)."""
    prices = DEFAULT_PRICES
    if settings.price_table:
        prices = DEFAULT_PRICES.merged(PriceTable.from_json(settings.price_table))
    timeout = settings.provider_timeout_seconds
    preview: ImageProvider = PreviewProvider(image_pool)
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


def _moderator(settings: Settings, session: aiohttp.ClientSession) -> Moderator | None:
    if settings.moderation != "openai":
        return None
    return OpenAIModerator(
        OpenAIModerationConfig(
            api_key=_secret(settings.openai_api_key), base_url=settings.openai_base_url
        ),
        session,
    )


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


async def provider_health(runtime: Runtime, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Probe every provider that has a cheap endpoint; the others are judged passively."""
    rows = []
    for name, provider in runtime.providers.items():
        inner = getattr(provider, "inner", provider)
        breaker = getattr(provider, "breaker", None)
        probe = getattr(inner, "health", None)
        healthy: bool | None = None
        detail = ""
        if probe is not None:
            try:
                async with asyncio.timeout(timeout):
                    healthy = await probe()
            except TimeoutError:
                healthy, detail = False, f"no answer within {timeout:g} s"
        state = breaker.snapshot().state.value if breaker is not None else "none"
        rows.append({"provider": name, "healthy": healthy, "breaker": state, "detail": detail})
    return rows
