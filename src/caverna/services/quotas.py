"""Quotas per user: images per day and spend per month, checked before anything is queued.

Usage is read from the image rows themselves, so every API process (and a restart) agrees on it
without a shared counter. A user's own quota overrides the configured default; None means
unlimited.

`Quotas.check` is the early, cheap refusal; it cannot be the guarantee, since two processes may
both read the same usage and then both insert. The guarantee is `Quotas.gate`: a check the job
store runs inside the insert's own transaction, after serialising that user's inserts, so the
count it reads already includes every row another process committed before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from caverna.queue.base import UsageGate
from caverna.services.accounts import AccountService


class UsageReader(Protocol):
    async def usage(self, user_id: str, since: datetime) -> tuple[int, float]: ...


@dataclass(frozen=True, slots=True)
class QuotaDefaults:
    daily_images: int | None = None
    monthly_usd: float | None = None


class QuotaExceeded(Exception):
    """A limit the request would go over. `user_id` and `asked` let a handler far from the
    caller (the insert refused it, not the early check) answer and audit it the same way."""

    def __init__(
        self,
        kind: str,
        limit: float,
        used: float,
        resets_at: datetime,
        *,
        user_id: str | None = None,
        asked: int | None = None,
    ) -> None:
        what = "images today" if kind == "daily_images" else "USD this month"
        super().__init__(f"quota reached: {used:g} of {limit:g} {what}")
        self.kind = kind
        self.limit = limit
        self.used = used
        self.resets_at = resets_at
        self.user_id = user_id
        self.asked = asked


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


# How long the limits the early check read stay good for the insert that follows it: the two
# are milliseconds apart in one request, and a limit changed in between may apply to either.
CHECKED_LIMITS_SECONDS = 5.0
# (the Quotas that read them, user, limits, monotonic time): set by `check`, taken by `gate`,
# so a request pays one read of the user's limits, and a user without limits nothing more
_checked: ContextVar[tuple[object, str, QuotaDefaults, float] | None] = ContextVar(
    "caverna_quota_checked", default=None
)


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
        self._token = object()

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
        _checked.set((self._token, user_id, limits, time.monotonic()))
        now = self.clock()
        if limits.daily_images is not None:
            used, _ = await self.usage.usage(user_id, day_start(now))
            judge(user_id, limits, now, images, used=used, spent=None)
        if limits.monthly_usd is not None:
            _, spent = await self.usage.usage(user_id, month_start(now))
            judge(user_id, limits, now, images, used=None, spent=spent)

    async def gate(self, user_id: str, images: int) -> UsageGate | None:
        """The check for the insert of `images` new rows to run in its own transaction; None
        for a user without limits, whose insert then takes no lock and counts nothing."""
        limits = await self._limits_for_insert(user_id)
        if limits.daily_images is None and limits.monthly_usd is None:
            return None
        now = self.clock()

        def admit(used: int | None, spent: float | None) -> None:
            judge(user_id, limits, now, images, used=used, spent=spent)

        return UsageGate(
            user_id=user_id,
            images_since=day_start(now) if limits.daily_images is not None else None,
            cost_since=month_start(now) if limits.monthly_usd is not None else None,
            admit=admit,
        )

    async def _limits_for_insert(self, user_id: str) -> QuotaDefaults:
        """The limits the early check of this task just read, once; else read them again."""
        checked = _checked.get()
        if checked is None:
            return await self.limits(user_id)
        _checked.set(None)
        token, checked_user, limits, at = checked
        fresh = time.monotonic() - at < CHECKED_LIMITS_SECONDS
        if token is self._token and checked_user == user_id and fresh:
            return limits
        return await self.limits(user_id)


def judge(
    user_id: str,
    limits: QuotaDefaults,
    now: datetime,
    images: int,
    *,
    used: int | None,
    spent: float | None,
) -> None:
    """Raise QuotaExceeded when `images` more go over a limit, given the usage read (None: not
    read). The spend of a queued image is unknown until it is made, so the monthly limit refuses
    only once what was already spent reaches it."""
    if limits.daily_images is not None and used is not None and used + images > limits.daily_images:
        resets = day_start(now) + timedelta(days=1)
        raise QuotaExceeded(
            "daily_images", limits.daily_images, used, resets, user_id=user_id, asked=images
        )
    if limits.monthly_usd is not None and spent is not None and spent >= limits.monthly_usd:
        raise QuotaExceeded(
            "monthly_usd",
            limits.monthly_usd,
            round(spent, 4),
            next_month(now),
            user_id=user_id,
            asked=images,
        )
