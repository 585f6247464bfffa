"""Helpers the provider adapter tests share: a real compiled prompt, a request, a progress log."""

from __future__ import annotations

from caverna.brand.registry import PackRegistry
from caverna.imaging import DeliveryFormat
from caverna.prompting.dialects.base import CompiledPrompt
from caverna.prompting.engine import PromptEngine
from caverna.providers.base import GenerationRequest

INVITATION = "onboarding/the-invitation"


def compile_for(dialect: str, frame: str = INVITATION, seed: int = 3) -> CompiledPrompt:
    """The prompt the real engine compiles for `frame` in `dialect` (nothing hand-written)."""
    return PromptEngine(PackRegistry()).compile({"frame": frame, "seed": seed}, dialect)


def generation_request(
    compiled: CompiledPrompt, *, job_id: str, delivery: DeliveryFormat = "webp"
) -> GenerationRequest:
    return GenerationRequest(job_id=job_id, compiled=compiled, delivery=delivery)


class Progress:
    """Collects what the provider reports, as the pipeline's callback would receive it."""

    def __init__(self) -> None:
        self.values: list[float] = []

    async def __call__(self, fraction: float) -> None:
        self.values.append(fraction)
