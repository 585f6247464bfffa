"""HTTP and queue metrics on the runtime's Prometheus registry, beside the provider metrics."""

from __future__ import annotations

import time
import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caverna.domain.jobs import JobStatus

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, ApiMetrics] = weakref.WeakKeyDictionary()


def api_metrics(registry: CollectorRegistry) -> ApiMetrics:
    """One set per registry: several apps over one runtime share (and may not re-register) it."""
    metrics = _BY_REGISTRY.get(registry)
    if metrics is None:
        metrics = _BY_REGISTRY[registry] = ApiMetrics(registry)
    return metrics


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "caverna_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "caverna_http_request_seconds",
            "Time to the response's headers, by route template.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.jobs = Gauge(
            "caverna_jobs",
            "Image jobs by status (read at scrape time).",
            ["status"],
            registry=registry,
        )

    def set_job_counts(self, counts: dict[str, int]) -> None:
        for status in JobStatus:
            self.jobs.labels(status.value).set(counts.get(status.value, 0))

    def observe(self, scope: Scope, status: int, started: float) -> None:
        # labelled by template, never by raw path: ids in paths would explode the series
        route = str(getattr(scope.get("route"), "path", None) or "unmatched")
        method = scope["method"]
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(time.perf_counter() - started)


class HttpMetrics:
    """Counts each request and times it to its response's headers (500 if the app raised first).

    Plain ASGI rather than `@app.middleware("http")`: that wrapper costs a task group and a pair
    of memory streams per request, about a fifth of the CPU of a status poll.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics: ApiMetrics = scope["app"].state.api.metrics
        started = time.perf_counter()
        observed = False

        async def timed(message: Message) -> None:
            nonlocal observed
            if message["type"] == "http.response.start" and not observed:
                observed = True
                metrics.observe(scope, message["status"], started)
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            if not observed:
                metrics.observe(scope, 500, started)
