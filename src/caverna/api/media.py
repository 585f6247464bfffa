"""URLs of stored images: the store's own (CDN or presigned) or a signed link to this server.

Signed local links expire on a fixed grid (the top of the next hour plus one), so repeated status
polls hand out the same URL and browsers can cache the image instead of fetching it again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from caverna.services.links import LinkSigner
from caverna.storage.base import ObjectStore

MEDIA_PURPOSE = "media"
LINK_GRID_SECONDS = 3600
MEDIA_PREFIX = "/media/"


class MediaLinks:
    def __init__(
        self, store: ObjectStore, signer: LinkSigner, *, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock

    def _expiry(self) -> datetime:
        now = self.clock().timestamp()
        grid = math.ceil(now / LINK_GRID_SECONDS) * LINK_GRID_SECONDS + LINK_GRID_SECONDS
        return datetime.fromtimestamp(grid, UTC)

    async def url(self, key: str | None) -> str | None:
        if key is None:
            return None
        expires_at = self._expiry()
        seconds = int((expires_at - self.clock()).total_seconds())
        external = await self.store.url(key, expires_in=max(60, seconds))
        if external is not None:
            return external
        link = self.signer.sign(MEDIA_PURPOSE, key, expires_at)
        return f"{MEDIA_PREFIX}{quote(key)}?expires={link.expires}&sig={link.signature}"

    def lifetime(self) -> timedelta:
        return self._expiry() - self.clock()
