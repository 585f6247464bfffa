"""Browser sessions for the web studio: a random token in an HttpOnly cookie, its hash here.

Each session has its own CSRF token, sent back by every form and script call. The user is
re-read on every request, so disabling a user (or changing their role) takes effect at once.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from caverna.domain.accounts import Principal
from caverna.services.accounts import AccountService

SESSION_LIFETIME = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class StoredSession:
    user_id: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class WebSession:
    principal: Principal
    csrf_token: str
    expires_at: datetime


class WebSessionStore(Protocol):
    async def add(
        self, token_hash: str, user_id: str, csrf_token: str, now: datetime, expires_at: datetime
    ) -> None: ...

    async def get(self, token_hash: str) -> StoredSession | None: ...

    async def delete(self, token_hash: str) -> None: ...


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WebSessions:
    def __init__(
        self, store: WebSessionStore, accounts: AccountService, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.clock = clock

    async def create(self, principal: Principal) -> tuple[str, WebSession]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = self.clock()
        expires_at = now + SESSION_LIFETIME
        await self.store.add(_hash(token), principal.user_id, csrf, now, expires_at)
        return token, WebSession(principal, csrf, expires_at)

    async def resolve(self, token: str | None) -> WebSession | None:
        if not token or len(token) > 100:
            return None
        stored = await self.store.get(_hash(token))
        if stored is None or stored.expires_at <= self.clock():
            return None
        try:
            user = await self.accounts.get_user(stored.user_id)
        except LookupError:
            return None
        if user.disabled:
            return None
        return WebSession(Principal(user.id, user.role, None), stored.csrf_token, stored.expires_at)

    async def end(self, token: str | None) -> None:
        if token:
            await self.store.delete(_hash(token))
