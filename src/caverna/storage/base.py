"""The object store interface every backend implements, and the errors callers can rely on.

Backends translate their own failures at the boundary into one small hierarchy, so services and
routes never see an ``OSError`` from the local folder or an obstore error from S3::

    StorageError
     +-- ObjectNotFound       get() of a key that holds no object
     +-- ObjectExists         put(..., if_absent=True) found the key already taken
     +-- StorageUnavailable   the backend failed or could not be reached: retry later

A key or prefix the scheme refuses raises ``ValueError`` before any I/O: it is a bug in the caller,
never something to retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

# S3 refuses presigned URLs valid for longer than seven days; every backend enforces the same range
# so a caller cannot pass a value that only fails once it is deployed against a bucket.
MAX_URL_EXPIRY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What ``head()`` knows about an object without reading its bytes."""

    key: str
    size: int
    content_type: str | None


@dataclass(frozen=True, slots=True)
class ListedObject:
    """One entry of a listing: enough to find objects nothing references and leave fresh ones.

    ``last_modified`` is timezone-aware (UTC), so a grace period never depends on the server's
    time zone.
    """

    key: str
    size: int
    last_modified: datetime


class StorageError(Exception):
    """Root of every error an object store raises on purpose."""


class ObjectNotFound(StorageError):
    """The key holds no object."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object at key {key!r}")
        self.key = key


class ObjectExists(StorageError):
    """A conditional put lost: another writer stored the key first, and its bytes are kept."""

    def __init__(self, key: str) -> None:
        super().__init__(f"an object already exists at key {key!r}")
        self.key = key


class StorageUnavailable(StorageError):
    """The backend failed or could not be reached; nothing was changed that a retry cannot fix."""


class ObjectStore(Protocol):
    """Bytes under service-generated keys, with the same semantics on every backend."""

    kind: str
    """``"local"``, ``"memory"`` or ``"s3"``: lets health pages and logs say where media lives."""

    async def put(
        self, key: str, data: bytes, *, content_type: str, if_absent: bool = False
    ) -> None:
        """Store atomically; ``if_absent`` makes concurrent writers of one key elect one winner."""
        ...

    async def get(self, key: str) -> bytes:
        """Read the whole object; raise ObjectNotFound so callers need no ``None`` checks."""
        ...

    async def head(self, key: str) -> StoredObject | None:
        """Describe the object without transferring it, or ``None`` when the key is free."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key succeeds so retries are harmless."""
        ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Sorted keys starting with ``prefix`` (a plain string prefix, not a folder match)."""
        ...

    async def list_objects(self, prefix: str) -> list[ListedObject]:
        """Like ``list_keys``, with each object's size and last-modified time, sorted by key.

        The time is when the object was last written, so a garbage collector can spare objects
        written by jobs that have not committed their row yet.
        """
        ...

    async def url(self, key: str, *, expires_in: int | None = None) -> str | None:
        """A URL clients can fetch directly, or ``None`` when the app must serve the bytes.

        ``expires_in`` (seconds) applies to presigned URLs; ``None`` uses the store's default.
        """
        ...

    def local_path(self, key: str) -> Path | None:
        """The file behind a key when there is one, so the app can hand it to ``sendfile``."""
        ...

    async def close(self) -> None:
        """Release clients and connections at shutdown."""
        ...


def check_expiry(expires_in: int) -> int:
    """Validate a URL lifetime the same way on every backend, including those that never sign."""
    if not 1 <= expires_in <= MAX_URL_EXPIRY_SECONDS:
        raise ValueError(
            f"URL expiry must be between 1 and {MAX_URL_EXPIRY_SECONDS} seconds, got {expires_in}"
        )
    return expires_in
