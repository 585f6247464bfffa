"""Quotas per user: images per day and spend per month, checked before anything is queued.

Usage is read from the image rows themselves, so every API process (and a restart) agrees on it
without a shared counter. A user's own quota overrides the configured default; None means
unlimited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from caverna.services.accounts import AccountService


class UsageReader(Protocol):
    async def usage(self, user_id: str, since: datetime) -> tuple[int, float]: ...


@dataclass(frozen=True, slots=True)
class QuotaDefaults:
    daily_images: int | None = None
    monthly_usd: float | None = None


class QuotaExceeded(Exception):
    def __init__(self, kind: str, limit: float, used: float, resets_at: datetime) -> None:
        what = "images today" if kind == "daily_images" else "USD this month"
        super().__init__(f"quota reached: {used:g} of {limit:g} {what}")
        self.kind = kind
        self.limit = limit
        self.used = used
        self.resets_at = resets_at


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


class Quotas:
    def __init__(
        self,
        usage: UsageReader,
        accounts: AccountService,
        defaults: QuotaDefaults,
        clock: Callable[[], datetime],
    ) -> None:
        self.usage = usage
        self.accounts = accounts
        self.defaults = defaults
        self.clock = clock

    async def limits(self, user_id: str) -> QuotaDefaults:
        try:
            user = await self.accounts.get_user(user_id)
        except LookupError:
            return self.defaults
        return QuotaDefaults(
            user.quota_daily_images
            if user.quota_daily_images is not None
            else self.defaults.daily_images,
            user.quota_monthly_usd
            if user.quota_monthly_usd is not None
            else self.defaults.monthly_usd,
        )

    async def check(self, user_id: str, images: int = 1) -> None:
        """Raise QuotaExceeded if `images` more would go over a limit."""
        limits = await self.limits(user_id)
        now = self.clock()
        if limits.daily_images is not None:
            used, _ = await self.usage.usage(user_id, day_start(now))
            if used + images > limits.daily_images:
                resets = day_start(now) + timedelta(days=1)
                raise QuotaExceeded("daily_images", limits.daily_images, used, resets)
        if limits.monthly_usd is not None:
            _, spent = await self.usage.usage(user_id, month_start(now))
            if spent >= limits.monthly_usd:
                raise QuotaExceeded(
                    "monthly_usd", limits.monthly_usd, round(spent, 4), next_month(now)
                )
