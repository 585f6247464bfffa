"""Share links: a public, expiring, revocable URL for one image.

The token in the URL names the share and its expiry and is signed, so a forged or altered link
fails without touching the database; a valid signature is then checked against the share's row,
which is what makes revocation immediate.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from caverna.domain.jobs import ImageJob
from caverna.services.links import InvalidLink, LinkSigner

SHARE_PURPOSE = "share"
DEFAULT_SHARE_LIFETIME = timedelta(days=7)
MAX_SHARE_LIFETIME = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class ShareInfo:
    id: uuid.UUID
    image_id: uuid.UUID
    user_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class ShareStore(Protocol):
    async def add(self, share: ShareInfo) -> None: ...

    async def get(self, share_id: uuid.UUID) -> ShareInfo | None: ...

    async def for_image(self, image_id: uuid.UUID) -> list[ShareInfo]: ...

    async def revoke(self, share_id: uuid.UUID, now: datetime) -> ShareInfo | None: ...


@dataclass(frozen=True, slots=True)
class NewShare:
    share: ShareInfo
    token: str


class Sharing:
    def __init__(
        self, store: ShareStore, signer: LinkSigner, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock

    async def create(self, job: ImageJob, lifetime: timedelta = DEFAULT_SHARE_LIFETIME) -> NewShare:
        if not timedelta(minutes=1) <= lifetime <= MAX_SHARE_LIFETIME:
            raise ValueError("a share link lives between one minute and 90 days")
        now = self.clock()
        expires_at = (now + lifetime).replace(microsecond=0)
        share = ShareInfo(uuid.uuid4(), job.id, job.user_id, now, expires_at, None)
        await self.store.add(share)
        link = self.signer.sign(SHARE_PURPOSE, share.id.hex, expires_at)
        return NewShare(share, f"{share.id.hex}.{link.expires}.{link.signature}")

    async def resolve(self, token: str) -> ShareInfo:
        """The share a token grants, or InvalidLink (forged, altered, expired or revoked)."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12:
            raise InvalidLink("the link is malformed", forged=True)
        subject, expires, signature = parts
        self.signer.verify(SHARE_PURPOSE, subject, int(expires), signature, self.clock())
        try:
            share_id = uuid.UUID(hex=subject)
        except ValueError:
            raise InvalidLink("the link is malformed", forged=True) from None
        share = await self.store.get(share_id)
        if share is None or share.revoked_at is not None:
            raise InvalidLink("the link was revoked")
        return share

    async def revoke(self, share_id: uuid.UUID) -> ShareInfo | None:
        return await self.store.revoke(share_id, self.clock())

    async def for_image(self, image_id: uuid.UUID) -> list[ShareInfo]:
        return await self.store.for_image(image_id)
