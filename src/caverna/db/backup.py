"""Backup and restore of the embedded mode: the SQLite database, the media folder and the secret.

A backup is one tar archive (gzip-compressed when its name ends in ``.tar.gz`` or ``.tgz``)::

    database/caverna.db      a consistent snapshot taken with SQLite's online backup API
    media/<key>              every object of the media folder, copied after the snapshot
    secret.key               the signing secret kept in the data folder, when there is one
    manifest.json            format, creation time, schema revision, counts, sha256 of each member

The snapshot is one step of the online backup API, which reads the whole database inside one read
transaction: writers carry on in the WAL meanwhile, and the snapshot is the database as of one
instant. Copying the live file instead could catch a page half-written or miss the WAL.

Media is copied after the snapshot, because a row is committed only after its objects are stored:
every row of the snapshot that names an object had it on disk before the copy began. Objects
written later come along as harmless extras; an object deleted in between (the image was deleted
while the backup ran) is reported, in the manifest and on screen, never silently dropped.

A restore checks everything before it changes anything: every member's sha256 against the
manifest, no member missing or unlisted, the database's integrity and schema revision (a newer
revision than this code knows is refused; an older one is migrated after the restore). Members are
unpacked next to their destination and moved into place only once all of that has passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from alembic.script import ScriptDirectory

from caverna import __version__
from caverna.db.media_refs import references_of
from caverna.db.migrate import alembic_config, upgrade
from caverna.storage.base import ObjectNotFound
from caverna.storage.keys import validate_key
from caverna.storage.local import LocalStore

FORMAT = "caverna-backup"
FORMAT_VERSION = 1
DATABASE_MEMBER = "database/caverna.db"
MEDIA_PREFIX = "media/"
SECRET_MEMBER = "secret.key"
MANIFEST_MEMBER = "manifest.json"
_CHUNK = 1024 * 1024
_IMAGE_COLUMNS = ("id", "status", "storage_key", "thumbnail_key", "sha256", "derivatives_status")

Progress = Callable[[int, int], None]
"""Called with (done, total) as media objects are copied."""


class BackupRefused(Exception):
    """The backup or restore cannot go ahead; nothing was written or changed."""


@dataclass(frozen=True, slots=True)
class EmbeddedPaths:
    """Where the embedded mode keeps its state."""

    database: Path
    media: Path
    secret: Path


@dataclass
class BackupReport:
    archive: Path
    schema_revision: str
    rows: dict[str, int]
    objects: int
    bytes: int
    referenced: int
    missing: list[str] = field(default_factory=list)
    """Objects rows of the snapshot name that were no longer in the media folder."""
    mismatched: list[str] = field(default_factory=list)
    """Objects whose sha256 differs from the one their row recorded."""


@dataclass
class RestoreReport:
    members: int
    objects: int
    schema_revision: str
    upgraded_to: str | None
    integrity: str
    referenced: int
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    missing_at_backup: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not (self.missing or self.mismatched)


def known_revisions() -> list[str]:
    """The migrations this code ships, newest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [revision.revision for revision in script.walk_revisions()]


# --- backup -----------------------------------------------------------------------------------


def snapshot_database(source: Path, target: Path) -> None:
    """Copy a live SQLite database consistently, into a self-contained file (no WAL)."""
    if not source.is_file():
        raise BackupRefused(f"there is no database at {source}")
    reader = sqlite3.connect(source, timeout=30)
    try:
        writer = sqlite3.connect(target)
        try:
            reader.backup(writer)  # pages=-1: the whole database in one step, one read snapshot
            writer.execute("PRAGMA journal_mode=DELETE")
        finally:
            writer.close()
    finally:
        reader.close()


def _database_facts(path: Path) -> tuple[str, dict[str, int], list[Any]]:
    connection = sqlite3.connect(path)
    try:
        found = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        if found is None:
            raise BackupRefused("the database has no schema revision: run `caverna db upgrade`")
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        rows = {
            table: int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
            for table in tables
        }
        # older revisions lack some columns (derivatives_status came in 0007)
        present = {str(r[1]) for r in connection.execute("PRAGMA table_info(generated_images)")}
        columns = [name for name in _IMAGE_COLUMNS if name in present]
        images = [
            SimpleNamespace(**dict(zip(columns, values, strict=True)))
            for values in connection.execute(f"SELECT {', '.join(columns)} FROM generated_images")
        ]
        return str(found[0]), rows, images
    except sqlite3.DatabaseError as exc:
        raise BackupRefused(f"cannot read the database: {exc}") from None
    finally:
        connection.close()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _writer(raw: IO[bytes], compress: bool) -> tarfile.TarFile:
    # images are compressed already; gzip mostly shrinks the database
    if compress:
        return tarfile.open(fileobj=raw, mode="w:gz")
    return tarfile.open(fileobj=raw, mode="w")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


async def create_backup(
    paths: EmbeddedPaths, out: Path, *, progress: Progress | None = None
) -> BackupReport:
    """Write the archive to ``out`` (which must not exist) through a temporary name."""
    if out.exists():
        raise BackupRefused(f"{out} already exists; choose another name")
    if not out.parent.is_dir():
        raise BackupRefused(f"folder {out.parent} does not exist")
    store = LocalStore(paths.media)
    partial = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    compress = out.name.endswith((".tar.gz", ".tgz"))
    members: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".caverna-backup-") as scratch:
        snapshot = Path(scratch) / "caverna.db"
        snapshot_database(paths.database, snapshot)
        revision, rows, images = _database_facts(snapshot)
        references = references_of(images)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as raw:
                with _writer(raw, compress) as tar:
                    members[DATABASE_MEMBER] = {
                        "sha256": _file_digest(snapshot),
                        "size": snapshot.stat().st_size,
                    }
                    tar.add(snapshot, arcname=DATABASE_MEMBER, recursive=False)
                    digests = await _add_media(tar, store, members, progress)
                    if paths.secret.is_file():
                        secret = paths.secret.read_bytes()
                        members[SECRET_MEMBER] = {
                            "sha256": hashlib.sha256(secret).hexdigest(),
                            "size": len(secret),
                        }
                        _add_bytes(tar, SECRET_MEMBER, secret, paths.secret.stat().st_mtime)
                    missing = sorted(
                        r.key for r in references if r.required and r.key not in digests
                    )
                    mismatched = sorted(
                        r.key
                        for r in references
                        if r.sha256 is not None and r.key in digests and digests[r.key] != r.sha256
                    )
                    object_bytes = sum(
                        m["size"] for n, m in members.items() if n.startswith(MEDIA_PREFIX)
                    )
                    manifest = {
                        "format": FORMAT,
                        "format_version": FORMAT_VERSION,
                        "created_at": datetime.now(UTC).isoformat(),
                        "caverna_version": __version__,
                        "schema_revision": revision,
                        "database": "sqlite",
                        "counts": {
                            "rows": rows,
                            "objects": len(digests),
                            "object_bytes": object_bytes,
                            "referenced_objects": len(references),
                            "missing_objects": len(missing),
                        },
                        "missing_objects": missing,
                        "mismatched_objects": mismatched,
                        "members": members,
                    }
                    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
                    _add_bytes(tar, MANIFEST_MEMBER, body, datetime.now(UTC).timestamp())
                raw.flush()
                os.fsync(raw.fileno())
            partial.replace(out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
    return BackupReport(
        archive=out,
        schema_revision=revision,
        rows=rows,
        objects=len(digests),
        bytes=object_bytes,
        referenced=len(references),
        missing=missing,
        mismatched=mismatched,
    )


async def _add_media(
    tar: tarfile.TarFile,
    store: LocalStore,
    members: dict[str, dict[str, Any]],
    progress: Progress | None,
) -> dict[str, str]:
    listed = await store.list_objects("")
    digests: dict[str, str] = {}
    for done, item in enumerate(listed, start=1):
        try:
            data = await store.get(item.key)
        except ObjectNotFound:
            continue  # deleted since the listing; a row still naming it is reported as missing
        digest = hashlib.sha256(data).hexdigest()
        name = MEDIA_PREFIX + item.key
        members[name] = {"sha256": digest, "size": len(data)}
        _add_bytes(tar, name, data, item.last_modified.timestamp())
        digests[item.key] = digest
        if progress is not None:
            progress(done, len(listed))
    return digests


# --- restore ----------------------------------------------------------------------------------


def target_in_use(paths: EmbeddedPaths) -> list[str]:
    """What already lives at the destination (a restore without --force refuses to touch it)."""
    found = []
    for path in (paths.database, Path(f"{paths.database}-wal")):
        if path.exists() and path.stat().st_size > 0:
            found.append(str(path))
    if paths.media.is_dir() and any(paths.media.iterdir()):
        found.append(str(paths.media))
    if paths.secret.exists():
        found.append(str(paths.secret))
    return found


def read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.getmember(MANIFEST_MEMBER)
        handle = tar.extractfile(member)
        if handle is None:
            raise KeyError(MANIFEST_MEMBER)
        manifest = json.loads(handle.read())
    except KeyError:
        raise BackupRefused("the archive has no manifest.json: not a Caverna backup") from None
    except (ValueError, tarfile.TarError) as exc:
        raise BackupRefused(f"the manifest cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupRefused("the manifest does not describe a Caverna backup")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupRefused(
            f"backup format version {manifest.get('format_version')!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    members = manifest.get("members")
    if not isinstance(members, dict) or DATABASE_MEMBER not in members:
        raise BackupRefused("the manifest lists no database")
    for name, entry in members.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("size"), int)
        ):
            raise BackupRefused(f"the manifest entry of {name!r} is malformed")
    if not isinstance(manifest.get("schema_revision"), str):
        raise BackupRefused("the manifest has no schema revision")
    return manifest


@dataclass
class _Staging:
    database: Path
    media: Path
    secret: Path

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.database.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.secret.unlink()
        shutil.rmtree(self.media, ignore_errors=True)


def _destination(staging: _Staging, name: str) -> Path:
    if name == DATABASE_MEMBER:
        return staging.database
    if name == SECRET_MEMBER:
        return staging.secret
    if name.startswith(MEDIA_PREFIX):
        key = name.removeprefix(MEDIA_PREFIX)
        try:
            validate_key(key)
        except ValueError as exc:
            raise BackupRefused(f"member {name!r} is not a valid media object: {exc}") from None
        return staging.media.joinpath(*key.split("/"))
    raise BackupRefused(f"member {name!r} does not belong in a Caverna backup")


def _copy_verified(source: IO[bytes], target: Path, expected: dict[str, Any], name: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != expected["sha256"] or size != expected["size"]:
        raise BackupRefused(
            f"member {name!r} does not match its sha256 in the manifest: "
            "the archive is damaged or was altered"
        )


def _unpack(
    tar: tarfile.TarFile,
    manifest: dict[str, Any],
    staging: _Staging,
    progress: Progress | None,
) -> int:
    listed: dict[str, dict[str, Any]] = manifest["members"]
    seen: set[str] = set()
    total = len(listed)
    for member in tar:
        name = member.name
        if name == MANIFEST_MEMBER:
            continue
        if name in seen:
            raise BackupRefused(f"member {name!r} appears twice in the archive")
        if name not in listed:
            raise BackupRefused(f"member {name!r} is not listed in the manifest")
        if not member.isfile():
            raise BackupRefused(f"member {name!r} is not a regular file")
        source = tar.extractfile(member)
        if source is None:
            raise BackupRefused(f"member {name!r} cannot be read")
        _copy_verified(source, _destination(staging, name), listed[name], name)
        seen.add(name)
        if progress is not None:
            progress(len(seen), total)
    absent = sorted(set(listed) - seen)
    if absent:
        raise BackupRefused(f"the archive lacks {len(absent)} listed member(s), e.g. {absent[0]!r}")
    return len(seen)


def _check_database(path: Path, manifest: dict[str, Any]) -> tuple[str, str]:
    connection = sqlite3.connect(path)
    try:
        integrity = ", ".join(str(row[0]) for row in connection.execute("PRAGMA integrity_check"))
        found = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupRefused(f"the database in the archive cannot be read: {exc}") from None
    finally:
        connection.close()
    if integrity != "ok":
        raise BackupRefused(f"the database in the archive fails its integrity check: {integrity}")
    revision = str(found[0]) if found else ""
    if revision != manifest["schema_revision"]:
        raise BackupRefused(
            f"the database is at revision {revision or 'none'} but the manifest says "
            f"{manifest['schema_revision']}"
        )
    known = known_revisions()
    if revision not in known:
        raise BackupRefused(
            f"the backup's schema revision {revision} is newer than this version of Caverna "
            f"knows (newest: {known[0]}); restore it with a newer Caverna"
        )
    return revision, integrity


def _move_into_place(staging: _Staging, paths: EmbeddedPaths, force: bool) -> None:
    if force:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{paths.database}{suffix}").unlink()
        shutil.rmtree(paths.media, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            paths.secret.unlink()
    paths.database.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):  # empty leftovers of a database that never held data
        with contextlib.suppress(FileNotFoundError):
            Path(f"{paths.database}{suffix}").unlink()
    staging.database.replace(paths.database)
    if paths.media.is_dir():
        paths.media.rmdir()  # empty: target_in_use refused anything else without --force
    staging.media.mkdir(parents=True, exist_ok=True)
    staging.media.replace(paths.media)
    if staging.secret.exists():
        paths.secret.parent.mkdir(parents=True, exist_ok=True)
        staging.secret.replace(paths.secret)


async def restore_backup(
    archive: Path,
    paths: EmbeddedPaths,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> RestoreReport:
    """Verify the archive completely, then put its database, media and secret in place."""
    if not archive.is_file():
        raise BackupRefused(f"there is no archive at {archive}")
    in_use = target_in_use(paths)
    if in_use and not force:
        raise BackupRefused(
            "the destination is not empty (" + ", ".join(in_use) + "); restore into an empty "
            "data folder, or pass --force to replace what is there"
        )
    token = secrets.token_hex(6)
    staging = _Staging(
        database=paths.database.with_name(f".{paths.database.name}.restore-{token}"),
        media=paths.media.with_name(f".{paths.media.name}.restore-{token}"),
        secret=paths.secret.with_name(f".{paths.secret.name}.restore-{token}"),
    )
    for folder in {staging.database.parent, staging.media.parent, staging.secret.parent}:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        try:
            tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the with just below
        except (tarfile.TarError, OSError) as exc:
            raise BackupRefused(f"{archive} is not a readable tar archive: {exc}") from None
        with tar:
            manifest = read_manifest(tar)
            members = _unpack(tar, manifest, staging, progress)
        revision, integrity = _check_database(staging.database, manifest)
        _move_into_place(staging, paths, force)
    except tarfile.TarError as exc:
        staging.remove()
        raise BackupRefused(f"the archive is damaged: {exc}") from None
    except BaseException:
        staging.remove()
        raise
    head = known_revisions()[0]
    upgraded_to = None
    if revision != head:
        await upgrade(f"sqlite+aiosqlite:///{paths.database.as_posix()}")
        upgraded_to = head
    report = RestoreReport(
        members=members,
        objects=sum(1 for name in manifest["members"] if name.startswith(MEDIA_PREFIX)),
        schema_revision=revision,
        upgraded_to=upgraded_to,
        integrity=integrity,
        referenced=0,
        missing_at_backup=list(manifest.get("missing_objects") or []),
    )
    await verify_media(paths, report)
    return report


async def verify_media(paths: EmbeddedPaths, report: RestoreReport) -> None:
    """Every object a live row names is in the media folder, with the digest its row recorded."""
    _revision, _rows, images = _database_facts(paths.database)
    references = references_of(images)
    store = LocalStore(paths.media)
    report.referenced = len(references)
    for reference in references:
        try:
            data = await store.get(reference.key)
        except ObjectNotFound:
            if reference.required:
                report.missing.append(reference.key)
            continue
        if reference.sha256 is not None and hashlib.sha256(data).hexdigest() != reference.sha256:
            report.mismatched.append(reference.key)
