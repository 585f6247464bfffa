"""Liveness, readiness, Prometheus metrics and provider health."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from caverna.api.deps import Caller, State
from caverna.api.schemas import ProviderHealth
from caverna.bootstrap import HEAD_REVISION, provider_health
from caverna.db.migrate import current_revision
from caverna.metrics_server import queue_collector

router = APIRouter(tags=["health"])
READY_TIMEOUT = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers: nothing else is checked (a liveness probe must not flap on a DB)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(state: State) -> JSONResponse:
    """Ready to serve: database reachable and migrated, object store reachable."""
    runtime = state.runtime
    checks: dict[str, Any] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            revision = await current_revision(runtime.engine)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if revision == HEAD_REVISION else f"at {revision}"
    except Exception as exc:  # any failure means not ready; the reason is shown
        checks["database"] = f"error: {type(exc).__name__}"
        checks["migrations"] = "unknown"
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await runtime.store.head("health/probe.webp")
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus exposition: HTTP, queue and provider metrics."""
    runtime = state.runtime
    state.metrics.set_job_counts(await runtime.jobs.counts())
    assert runtime.metrics is not None
    registry = runtime.metrics.registry
    queue = queue_collector(
        registry, runtime.jobs, providers=list(runtime.providers), clock=runtime.clock
    )
    await queue.refresh()
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/providers/health", tags=["providers"])
async def providers_health(state: State, _caller: Caller) -> list[ProviderHealth]:
    """Each provider in failover order: probe result where one is cheap, and breaker state."""
    return [ProviderHealth(**row) for row in await provider_health(state.runtime)]
