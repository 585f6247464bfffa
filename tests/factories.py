"""Builders of test data that would otherwise be repeated in every test."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

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


class FakeClock:
    """A clock the test moves by hand, so lease expiry needs no sleeping."""

    def __init__(self, start: datetime = BASE_TIME + timedelta(days=1)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
