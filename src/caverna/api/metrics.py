"""HTTP and queue metrics on the runtime's Prometheus registry, beside the provider metrics."""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.responses import Response

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

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            # labelled by template, never by raw path: ids in paths would explode the series
            route = _route_template(request)
            self.requests.labels(route, request.method, str(status)).inc()
            self.latency.labels(route, request.method).observe(time.perf_counter() - started)


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")
