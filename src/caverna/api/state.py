"""What every request handler needs, built once per app from the runtime."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from caverna.api.media import MediaLinks
from caverna.api.metrics import ApiMetrics, api_metrics
from caverna.bootstrap import Runtime
from caverna.services.image_actions import ImageActions


@dataclass
class ApiState:
    runtime: Runtime
    actions: ImageActions
    media: MediaLinks
    metrics: ApiMetrics
    events_poll_seconds: float = 0.5
    heartbeat_seconds: float = 15.0


def build_state(runtime: Runtime, *, events_poll_seconds: float = 0.5) -> ApiState:
    actions = runtime.actions
    media = MediaLinks(runtime.store, runtime.signer, clock=runtime.clock)
    registry = runtime.metrics.registry if runtime.metrics is not None else CollectorRegistry()
    return ApiState(
        runtime, actions, media, api_metrics(registry), events_poll_seconds=events_poll_seconds
    )
