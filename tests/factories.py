"""Builders of test data that would otherwise be repeated in every test."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from caverna.domain.jobs import CompletedImage

BASE_TIME = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def job_values(index: int = 0, **overrides: Any) -> dict[str, Any]:
    """Column values of a queued job; `index` orders creation times."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "user_id": "user-1",
        "status": "queued",
        "params": {"pack": "capitao-caverna", "pose": "standing-ready", "seed": index},
        "params_hash": f"{index:064x}",
        "pack_id": "capitao-caverna",
        "pack_version": "1.0.0",
        "template_version": "e1-0000000000000000",
        "pose": "standing-ready",
        "outfit": "captain-tunic",
        "footwear": "hide-wrap-boots",
        "props": "",
        "provider": "preview",
        "seed": index,
        "delivery_format": "webp",
        "progress": 0.0,
        "attempts": 0,
        "max_attempts": 3,
        "created_at": BASE_TIME + timedelta(seconds=index),
    }
    values.update(overrides)
    return values


def completed(seed: int = 1, **overrides: Any) -> CompletedImage:
    """What a worker hands the store when a job completes; overrides replace fields."""
    image = CompletedImage(
        model="m",
        prompt="p",
        negative_prompt=None,
        storage_key="images/2026/11/x.webp",
        thumbnail_key="thumbs/2026/11/x.webp",
        content_type="image/webp",
        width=8,
        height=8,
        bytes=10,
        sha256="0" * 64,
        cost_usd=0.0,
        provider_latency_ms=1.0,
        seed=seed,
        provider="preview",
        attempt_log=[{"provider": "preview", "outcome": "ok"}],
    )
    return replace(image, **overrides)


class FakeClock:
    """A clock the test moves by hand, so lease expiry needs no sleeping."""

    def __init__(self, start: datetime = BASE_TIME + timedelta(days=1)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
