"""URLs of stored images: the store's own (CDN or presigned) or a signed link to this server.

Signed local links expire on a fixed grid (the top of the next hour plus one), so repeated status
polls hand out the same URL and browsers can cache the image instead of fetching it again.
A thumbnail not made yet is linked through this server even when the store has links of its own.
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
THUMBNAIL_PREFIX = "thumbs/"
KNOWN_THUMBNAILS = 10_000


class MediaLinks:
    def __init__(
        self, store: ObjectStore, signer: LinkSigner, *, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock
        self._known: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first

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
        if external is not None and await self._served_by_store(key):
            return external
        link = self.signer.sign(MEDIA_PURPOSE, key, expires_at)
        return f"{MEDIA_PREFIX}{quote(key)}?expires={link.expires}&sig={link.signature}"

    async def _served_by_store(self, key: str) -> bool:
        """Whether a link straight to the store works. A thumbnail is made after its image
        completes: until it exists, its link goes through this server, which makes it on
        request, so an `<img>` is never broken. Thumbnails seen once are remembered."""
        if not key.startswith(THUMBNAIL_PREFIX) or key in self._known:
            return True
        try:
            exists = await self.store.head(key) is not None
        except Exception:  # the store is briefly away: its own link is no worse than before
            return True
        if exists:
            if len(self._known) >= KNOWN_THUMBNAILS:
                self._known.pop(next(iter(self._known)))
            self._known[key] = None
        return exists

    def lifetime(self) -> timedelta:
        return self._expiry() - self.clock()
