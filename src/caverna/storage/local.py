"""Objects as plain files under one folder: the zero-set-up default, served by the app itself.

Durability: a write goes to a temporary file in the target folder, is fsynced, then moved into
place with ``os.replace`` (or hard-linked with ``os.link`` for ``if_absent``, which fails when the
name is taken, so exactly one of several concurrent writers wins), and the folder is fsynced so
the new name survives a power cut. Readers therefore see the old bytes or the new bytes, never
a torn file, and a crash leaves at most a stray temporary file, which listings ignore.

Containment: keys are validated, and on top of that every path is resolved and must equal the
path the key names under the (resolved) root. A symbolic link anywhere below the root is refused
rather than followed, so a link planted inside the folder cannot read or write outside it. To keep
media on another disk, point the root itself at it (the root may be a link).

Plain files are used instead of ``obstore.store.LocalStore`` because the durability and link
rules above need control over every system call. File I/O runs in worker threads, off the event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from caverna.storage.base import (
    ListedObject,
    ObjectExists,
    ObjectNotFound,
    StorageUnavailable,
    StoredObject,
    check_expiry,
)
from caverna.storage.keys import (
    check_content_type,
    content_type_for,
    validate_key,
    validate_prefix,
)

_T = TypeVar("_T")

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
# '~' never appears in a valid key, so a temporary file can neither collide with an object
# nor be reported by list_keys, even if a crash leaves one behind.
_TEMP_SUFFIX = "~tmp"


class LocalStore:
    """A folder of objects; the folder (and its parents) is created when missing."""

    kind: str = "local"

    def __init__(self, root: Path) -> None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._root = root.resolve(strict=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot use {root} as the media folder: {exc}") from exc
        if not self._root.is_dir():
            raise StorageUnavailable(f"media folder {self._root} is not a directory")

    @property
    def root(self) -> Path:
        """The resolved folder, for diagnostics and backups."""
        return self._root

    async def put(
        self, key: str, data: bytes, *, content_type: str, if_absent: bool = False
    ) -> None:
        check_content_type(validate_key(key), content_type)
        await self._run(key, "write", lambda: self._put_sync(key, bytes(data), if_absent))

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await self._run(key, "read", lambda: self._get_sync(key))

    async def head(self, key: str) -> StoredObject | None:
        validate_key(key)
        return await self._run(key, "inspect", lambda: self._head_sync(key))

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._run(key, "delete", lambda: self._delete_sync(key))

    async def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        return await self._run(prefix, "list", lambda: self._list_sync(prefix))

    async def list_objects(self, prefix: str) -> list[ListedObject]:
        validate_prefix(prefix)
        return await self._run(prefix, "list", lambda: self._list_objects_sync(prefix))

    async def url(self, key: str, *, expires_in: int | None = None) -> str | None:
        validate_key(key)
        if expires_in is not None:
            check_expiry(expires_in)
        return None

    def local_path(self, key: str) -> Path | None:
        """The path a key maps to, whether or not the object exists yet (check with head())."""
        return self._path(key)

    async def close(self) -> None:
        return None

    async def _run(self, key: str, action: str, work: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(work)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link appeared between the check and the open
                raise ValueError(_link_message(key)) from exc
            raise StorageUnavailable(
                f"cannot {action} {key!r} in media folder {self._root}: {exc.strerror or exc}"
            ) from exc

    def _path(self, key: str) -> Path:
        candidate = self._root.joinpath(*validate_key(key).split("/"))
        if Path(os.path.realpath(candidate)) != candidate:
            raise ValueError(_link_message(key))
        return candidate

    def _put_sync(self, key: str, data: bytes, if_absent: bool) -> None:
        path = self._path(key)
        folder = path.parent
        self._make_folders(key, folder)
        temp = folder / f".{path.name}.{secrets.token_hex(8)}{_TEMP_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY
        try:
            with os.fdopen(os.open(temp, flags, 0o644), "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            if if_absent:
                try:
                    os.link(temp, path)
                except FileExistsError:
                    raise ObjectExists(key) from None
            else:
                try:
                    temp.replace(path)
                except IsADirectoryError:
                    raise ValueError(_folder_conflict(key)) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        _fsync_folder(folder)

    def _make_folders(self, key: str, folder: Path) -> None:
        missing: list[Path] = []
        current = folder
        while current != self._root:
            try:
                mode = current.lstat().st_mode
            except (FileNotFoundError, NotADirectoryError):
                missing.append(current)
                current = current.parent
                continue
            if not stat.S_ISDIR(mode):
                raise ValueError(_folder_conflict(key))
            break
        for created in reversed(missing):
            try:
                created.mkdir()
            except FileExistsError:
                if not created.is_dir():
                    raise ValueError(_folder_conflict(key)) from None
            # Also when a concurrent writer made it: this put must not return before the folder's
            # entry is durable, and the other writer may not have fsynced it yet.
            _fsync_folder(created.parent)

    def _get_sync(self, key: str) -> bytes:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise ObjectNotFound(key)
            return file.read()

    def _head_sync(self, key: str) -> StoredObject | None:
        try:
            info = self._path(key).lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return StoredObject(key=key, size=info.st_size, content_type=content_type_for(key))

    def _delete_sync(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        _fsync_folder(path.parent)

    def _list_sync(self, prefix: str) -> list[str]:
        return [key for key, _info in self._walk(prefix)]

    def _list_objects_sync(self, prefix: str) -> list[ListedObject]:
        return [
            ListedObject(
                key=key,
                size=info.st_size,
                last_modified=datetime.fromtimestamp(info.st_mtime, UTC),
            )
            for key, info in self._walk(prefix)
        ]

    def _walk(self, prefix: str) -> list[tuple[str, os.stat_result]]:
        """Keys under ``prefix`` with the ``lstat`` of their file, sorted by key."""
        folder_part = prefix.rpartition("/")[0]
        start = self._root.joinpath(*folder_part.split("/")) if folder_part else self._root
        if Path(os.path.realpath(start)) != start or not start.is_dir():
            return []
        found: list[tuple[str, os.stat_result]] = []
        for folder, subfolders, files in os.walk(start, followlinks=False):
            relative = Path(folder).relative_to(self._root).as_posix()
            base = "" if relative == "." else relative + "/"
            # Descend only where keys can still start with the prefix.
            subfolders[:] = [
                name
                for name in subfolders
                if (base + name + "/").startswith(prefix) or prefix.startswith(base + name + "/")
            ]
            for name in files:
                key = base + name
                if not key.startswith(prefix) or not _is_key(key):
                    continue
                info = _plain_file_info(Path(folder, name))
                if info is not None:
                    found.append((key, info))
        found.sort(key=lambda item: item[0])
        return found


def _is_key(name: str) -> bool:
    try:
        validate_key(name)
    except ValueError:
        return False
    return True


def _plain_file_info(path: Path) -> os.stat_result | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _fsync_folder(folder: Path) -> None:
    # Windows cannot open a folder for fsync; its rename is already durable once it returns.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_message(key: str) -> str:
    return (
        f"object key {key!r} leads through a symbolic link inside the media folder; "
        "the local store follows no links below its root"
    )


def _folder_conflict(key: str) -> str:
    return f"object key {key!r} collides with an existing object or folder of the same name"
