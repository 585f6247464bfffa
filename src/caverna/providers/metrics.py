"""Prometheus metrics of provider calls: what operators alert on (failures by code, latency,
breaker state, money spent). A registry is injected, so tests and several runtimes in one
process never collide on the global one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from caverna.providers.resilience import BreakerState

BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class ProviderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "caverna_provider_requests",
            "Provider calls by outcome (ok or an error code of the taxonomy).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "caverna_provider_latency_seconds",
            "Duration of provider calls, successful or not.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.breaker = Gauge(
            "caverna_provider_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            registry=self.registry,
        )
        self.cost = Counter(
            "caverna_provider_cost_usd",
            "Estimated spend on provider calls, in US dollars.",
            ["provider"],
            registry=self.registry,
        )

    def observe(
        self, provider: str, outcome: str, seconds: float, cost_usd: float, breaker: BreakerState
    ) -> None:
        self.requests.labels(provider, outcome).inc()
        self.latency.labels(provider).observe(seconds)
        if cost_usd:
            self.cost.labels(provider).inc(cost_usd)
        self.breaker.labels(provider).set(BREAKER_VALUES[breaker])
