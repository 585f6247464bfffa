"""An object store in a dict: for tests and throwaway servers, where losing media on exit is fine.

It enforces the same key rules, content-type rules and errors as the durable backends, so code
that passes against it does not start failing when pointed at a folder or a bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from caverna.storage.base import (
    ListedObject,
    ObjectExists,
    ObjectNotFound,
    StoredObject,
    check_expiry,
)
from caverna.storage.keys import check_content_type, validate_key, validate_prefix


class MemoryStore:
    """Objects live in this process only; every method completes without yielding mid-update."""

    kind: str = "memory"

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        # the clock stamps each write; tests pass one to age objects without waiting
        self._clock = clock or (lambda: datetime.now(UTC))
        self._objects: dict[str, tuple[bytes, str]] = {}
        self._modified: dict[str, datetime] = {}

    async def put(
        self, key: str, data: bytes, *, content_type: str, if_absent: bool = False
    ) -> None:
        check_content_type(validate_key(key), content_type)
        # Check and set run with no await in between, so concurrent if_absent writers elect one.
        if if_absent and key in self._objects:
            raise ObjectExists(key)
        self._objects[key] = (bytes(data), content_type)
        self._modified[key] = self._clock()

    async def get(self, key: str) -> bytes:
        try:
            return self._objects[validate_key(key)][0]
        except KeyError:
            raise ObjectNotFound(key) from None

    async def head(self, key: str) -> StoredObject | None:
        found = self._objects.get(validate_key(key))
        if found is None:
            return None
        return StoredObject(key=key, size=len(found[0]), content_type=found[1])

    async def delete(self, key: str) -> None:
        self._objects.pop(validate_key(key), None)
        self._modified.pop(key, None)

    async def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        return sorted(key for key in self._objects if key.startswith(prefix))

    async def list_objects(self, prefix: str) -> list[ListedObject]:
        validate_prefix(prefix)
        return [
            ListedObject(
                key=key, size=len(self._objects[key][0]), last_modified=self._modified[key]
            )
            for key in sorted(key for key in self._objects if key.startswith(prefix))
        ]

    async def url(self, key: str, *, expires_in: int | None = None) -> str | None:
        validate_key(key)
        if expires_in is not None:
            check_expiry(expires_in)
        return None

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    async def close(self) -> None:
        return None
