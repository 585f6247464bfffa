"""Test doubles that implement the real interfaces (providers here; real HTTP fakes elsewhere)."""

from __future__ import annotations

import asyncio
import io
from collections import deque
from dataclasses import dataclass, field

from PIL import Image

from caverna.providers.base import (
    GenerationRequest,
    ProgressCallback,
    ProviderError,
    ProviderImage,
)


def solid_image(
    fmt: str = "PNG", size: tuple[int, int] = (64, 96), color: str = "#F2A541"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


@dataclass
class ScriptedProvider:
    """Answers with a fixed image, after raising the errors it was given, one per call."""

    name: str
    image: bytes = field(default_factory=solid_image)
    content_type: str = "image/png"
    errors: deque[ProviderError] = field(default_factory=deque)
    delay: float = 0.0
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        self.calls += 1
        self.started.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await progress(0.2)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.errors:
                raise self.errors.popleft()
        finally:
            self.in_flight -= 1
        await progress(1.0)
        return ProviderImage(
            data=self.image,
            content_type=self.content_type,
            model=f"{self.name}-test-model",
            seed=request.compiled.seed,
            cost_usd=0.01,
            latency_ms=5.0,
        )
