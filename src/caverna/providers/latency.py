"""A provider wrapper that adds latency: rehearse real provider timing with the offline preview."""

from __future__ import annotations

import asyncio
import dataclasses

from caverna.providers.base import (
    GenerationRequest,
    ImageProvider,
    ProgressCallback,
    ProviderImage,
)

_STEPS = 10


class WithLatency:
    def __init__(self, inner: ImageProvider, latency_ms: float):
        self.inner = inner
        self.name = inner.name
        self.latency_ms = latency_ms

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        # the wait reports progress like a real provider would, in tenths
        for step in range(_STEPS):
            await asyncio.sleep(self.latency_ms / 1000 / _STEPS)
            await progress(0.5 * (step + 1) / _STEPS)

        async def second_half(value: float) -> None:
            await progress(0.5 + value / 2)

        image = await self.inner.generate(request, second_half)
        return dataclasses.replace(image, latency_ms=image.latency_ms + self.latency_ms)
