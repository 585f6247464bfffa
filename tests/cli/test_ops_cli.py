"""`caverna backup`, `restore`, `storage gc` and `storage migrate` as an operator runs them,
on an embedded data folder (SQLite and files) that a writer may be filling at the same time."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, Table, insert
from sqlalchemy import create_engine as create_sync_engine
from typer.testing import CliRunner

from caverna.cli.app import app
from caverna.db.backup import EmbeddedPaths, create_backup, known_revisions
from caverna.db.engine import configure_sqlite
from caverna.db.migrate import upgrade_sync
from caverna.db.models import ImageRow
from caverna.storage.keys import image_key, thumbnail_key
from caverna.storage.local import LocalStore

IMAGES: Table = ImageRow.__table__  # type: ignore[assignment]
runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("CAVERNA_DATA_DIR", "CAVERNA_DATABASE_URL", "CAVERNA_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})
    return result.exit_code, result.stdout, result.output


def sync_engine(data_dir: Path) -> Engine:
    engine = create_sync_engine(
        f"sqlite:///{data_dir / 'caverna.db'}", connect_args={"timeout": 30}
    )
    configure_sqlite(engine)
    return engine


def new_data_dir(data_dir: Path, revision: str = "head") -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_sync(f"sqlite+aiosqlite:///{data_dir / 'caverna.db'}", revision)


async def add_image(engine: Engine, store: LocalStore, number: int) -> str:
    """Store the objects, then commit the row: the order a worker keeps."""
    image_id = uuid.uuid4()
    created_at = datetime.now(UTC)
    data = os.urandom(200) + b"image %d" % number
    key = image_key(image_id, created_at, "webp")
    thumb = thumbnail_key(image_id, created_at)
    await store.put(key, data, content_type="image/webp")
    await store.put(thumb, data[:50], content_type="image/webp")
    with engine.begin() as connection:
        connection.execute(
            insert(IMAGES).values(
                id=image_id,
                user_id="ana",
                status="completed",
                params={},
                params_hash="0" * 64,
                pack_id="capitao-caverna",
                pack_version="1.0.0",
                template_version="e1-0000000000000000",
                pose="p",
                outfit="o",
                footwear="f",
                provider="preview",
                created_at=created_at,
                storage_key=key,
                thumbnail_key=thumb,
                sha256=hashlib.sha256(data).hexdigest(),
                derivatives_status="done",
            )
        )
    return key


def populate(data_dir: Path, count: int) -> list[str]:
    engine = sync_engine(data_dir)
    store = LocalStore(data_dir / "media")

    async def main() -> list[str]:
        return [await add_image(engine, store, number) for number in range(count)]

    try:
        return asyncio.run(main())
    finally:
        engine.dispose()


class Writer(threading.Thread):
    """Inserts images (objects, then row) until told to stop, counting what it committed."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.data_dir = data_dir
        self.stop = threading.Event()
        self.committed = 0
        self.changed = threading.Condition()
        self.error: BaseException | None = None

    def run(self) -> None:
        engine = sync_engine(self.data_dir)
        store = LocalStore(self.data_dir / "media")

        async def main() -> None:
            for number in range(20_000):  # bounded; stopped long before
                if self.stop.is_set():
                    return
                await add_image(engine, store, number)
                with self.changed:
                    self.committed += 1
                    self.changed.notify_all()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the test
            self.error = exc
            with self.changed:
                self.changed.notify_all()
        finally:
            engine.dispose()

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        with self.changed:
            reached = self.changed.wait_for(
                lambda: self.committed >= count or self.error is not None, timeout
            )
        assert self.error is None, self.error
        assert reached, f"the writer committed only {self.committed} of {count} rows"


def integrity(database: Path) -> str:
    connection = sqlite3.connect(database)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def rows_of(database: Path) -> list[tuple[str, str, str]]:
    connection = sqlite3.connect(database)
    try:
        return [
            (str(r[0]), str(r[1]), str(r[2]))
            for r in connection.execute(
                "SELECT storage_key, thumbnail_key, sha256 FROM generated_images"
            )
        ]
    finally:
        connection.close()


def assert_every_reference_holds(data_dir: Path) -> int:
    """Each row's image is there with the sha256 the row recorded, and its thumbnail too."""
    found = rows_of(data_dir / "caverna.db")
    for key, thumb, digest in found:
        image = data_dir / "media" / key
        assert hashlib.sha256(image.read_bytes()).hexdigest() == digest, key
        assert (data_dir / "media" / thumb).is_file(), thumb
    return len(found)


# --- backup and restore ------------------------------------------------------------------------


def test_backup_while_a_writer_inserts_then_restore_is_consistent(workdir: Path) -> None:
    data = workdir / "caverna-data"
    new_data_dir(data)
    writer = Writer(data)
    writer.start()
    try:
        writer.wait_for(20)
        waited = False

        def progress(done: int, total: int) -> None:
            # the writer keeps committing while media is being copied after the snapshot
            nonlocal waited
            if not waited:
                waited = True
                writer.wait_for(writer.committed + 5)

        paths = EmbeddedPaths(data / "caverna.db", data / "media", data / "secret.key")
        report = asyncio.run(create_backup(paths, workdir / "b.tar", progress=progress))
        writer.wait_for(writer.committed + 5)
    finally:
        writer.stop.set()
        writer.join(60)
    assert writer.error is None
    assert report.missing == []
    assert report.mismatched == []

    code, out, output = run("restore", "b.tar", "--data-dir", "restored", "--json")

    assert code == 0, output
    result = json.loads(out)
    assert result["consistent"] is True
    assert result["integrity"] == "ok"
    restored = workdir / "restored"
    assert integrity(restored / "caverna.db") == "ok"
    restored_rows = assert_every_reference_holds(restored)
    assert 20 <= restored_rows < writer.committed  # a snapshot, taken while rows kept coming
    assert restored_rows == report.rows["generated_images"]
    # objects written after the snapshot may come along without their rows, which is harmless
    assert report.objects >= 2 * restored_rows


def test_backup_and_restore_through_the_cli_with_compression(workdir: Path) -> None:
    data = workdir / "caverna-data"
    new_data_dir(data)
    keys = populate(data, 4)
    (data / "secret.key").write_bytes(b"s" * 64)

    code, out, output = run("backup", "b.tar.gz", "--json")
    assert code == 0, output
    summary = json.loads(out)
    assert summary["objects"] == 8
    assert summary["rows"]["generated_images"] == 4
    assert summary["schema_revision"] == known_revisions()[0]
    assert ((workdir / "b.tar.gz").stat().st_mode & 0o777) == 0o600  # it holds the secret
    with tarfile.open(workdir / "b.tar.gz") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert names[0] == "database/caverna.db"
    assert names[-1] == "manifest.json"
    assert set(manifest["members"]) == set(names) - {"manifest.json"}
    assert manifest["format_version"] == 1
    assert manifest["counts"]["objects"] == 8

    code, _, output = run("backup", "b.tar.gz")
    assert code == 2
    assert "already exists" in output

    code, out, output = run("restore", "b.tar.gz", "--data-dir", "restored")
    assert code == 0, output
    assert "every sha256 verified" in out
    restored = workdir / "restored"
    assert assert_every_reference_holds(restored) == 4
    assert (restored / "secret.key").read_bytes() == b"s" * 64
    assert sorted(rows_of(restored / "caverna.db")) == sorted(rows_of(data / "caverna.db"))
    assert {k for k, _, _ in rows_of(restored / "caverna.db")} == set(keys)


def rewrite(archive: Path, change: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]) -> None:
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    change(members)
    with tarfile.open(archive, "w") as tar:
        for info, body in members:
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def flip_media_byte(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    index = next(i for i, (m, _) in enumerate(members) if m.name.startswith("media/images/"))
    info, body = members[index]
    members[index] = (info, bytes([body[0] ^ 1]) + body[1:])


def drop_member(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    index = next(i for i, (m, _) in enumerate(members) if m.name.startswith("media/thumbs/"))
    del members[index]


def add_member(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    members.insert(1, (tarfile.TarInfo("media/images/2026/11/extra.webp"), b"smuggled"))


def escape_path(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    members.insert(1, (tarfile.TarInfo("../outside.txt"), b"x"))


def drop_manifest(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    del members[-1]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (flip_media_byte, "does not match its sha256"),
        (drop_member, "lacks 1 listed member"),
        (add_member, "is not listed in the manifest"),
        (escape_path, "is not listed in the manifest"),
        (drop_manifest, "no manifest.json"),
    ],
)
def test_restore_refuses_a_tampered_archive_and_writes_nothing(
    workdir: Path, tamper: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None], message: str
) -> None:
    data = workdir / "caverna-data"
    new_data_dir(data)
    populate(data, 2)
    assert run("backup", "b.tar")[0] == 0
    rewrite(workdir / "b.tar", tamper)

    code, _, output = run("restore", "b.tar", "--data-dir", "restored")

    assert code == 2, output
    assert message in output
    target = workdir / "restored"
    assert not target.exists() or list(target.iterdir()) == []
    assert not (workdir / "outside.txt").exists()


def test_restore_refuses_something_that_is_not_an_archive(workdir: Path) -> None:
    (workdir / "b.tar").write_bytes(b"not a tar at all" * 100)
    code, _, output = run("restore", "b.tar", "--data-dir", "restored")
    assert code == 2
    assert "not a readable tar archive" in output
    code, _, output = run("restore", "missing.tar", "--data-dir", "restored")
    assert code == 2
    assert "there is no archive" in output


def set_revision(revision: str) -> Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]:
    """Rewrites the database's revision and re-signs the manifest, as a newer release would."""

    def change(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        scratch = Path(f"scratch-{uuid.uuid4().hex}.db")
        (info, body) = members[0]
        scratch.write_bytes(body)
        connection = sqlite3.connect(scratch)
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        connection.commit()
        connection.close()
        body = scratch.read_bytes()
        scratch.unlink()
        members[0] = (info, body)
        manifest = json.loads(members[-1][1])
        manifest["schema_revision"] = revision
        manifest["members"][info.name] = {
            "sha256": hashlib.sha256(body).hexdigest(),
            "size": len(body),
        }
        members[-1] = (members[-1][0], json.dumps(manifest).encode())

    return change


def test_restore_refuses_a_newer_schema_and_migrates_an_older_one(workdir: Path) -> None:
    data = workdir / "caverna-data"
    new_data_dir(data)
    populate(data, 1)
    assert run("backup", "new.tar")[0] == 0
    rewrite(workdir / "new.tar", set_revision("9999"))
    code, _, output = run("restore", "new.tar", "--data-dir", "restored")
    assert code == 2
    assert "9999 is newer than this version" in output
    assert not (workdir / "restored" / "caverna.db").exists()

    old = workdir / "old-data"
    previous = known_revisions()[1]
    new_data_dir(old, previous)
    code, _, output = run("backup", "old.tar", "--data-dir", "old-data")
    assert code == 0, output
    code, out, output = run("restore", "old.tar", "--data-dir", "restored", "--json")
    assert code == 0, output
    assert json.loads(out)["schema_revision"] == previous
    assert json.loads(out)["upgraded_to"] == known_revisions()[0]
    connection = sqlite3.connect(workdir / "restored" / "caverna.db")
    (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    connection.close()
    assert revision == known_revisions()[0]


def test_restore_refuses_a_folder_in_use_unless_forced(workdir: Path) -> None:
    data = workdir / "caverna-data"
    new_data_dir(data)
    populate(data, 2)
    assert run("backup", "b.tar")[0] == 0
    populate(data, 3)  # the live folder moves on: five images now

    code, _, output = run("restore", "b.tar")
    assert code == 2
    assert "not empty" in output
    assert "--force" in output
    assert len(rows_of(data / "caverna.db")) == 5

    code, _, output = run("restore", "b.tar", "--force")
    assert code == 0, output
    assert assert_every_reference_holds(data) == 2
    assert len(list((data / "media" / "images").rglob("*.webp"))) == 2


@pytest.mark.parametrize(
    ("variable", "value", "pointer"),
    [
        ("CAVERNA_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/caverna", "pg_dump"),
        ("CAVERNA_STORAGE_URL", "s3://caverna-media?endpoint=http://127.0.0.1:9", "versioning"),
    ],
)
def test_backup_and_restore_refuse_scale_out_configurations(
    workdir: Path, variable: str, value: str, pointer: str
) -> None:
    for command in (("backup", "b.tar"), ("restore", "b.tar")):
        code, _, output = run(*command, env={variable: value})
        assert code == 2
        assert pointer in output
        assert "docs/operations.md" in output
    assert not (workdir / "b.tar").exists()


# --- storage gc and migrate --------------------------------------------------------------------


@pytest.fixture
def aged_orphan(workdir: Path) -> tuple[Path, Path, list[str]]:
    data = workdir / "caverna-data"
    new_data_dir(data)
    keys = populate(data, 2)
    media = data / "media"
    old = media / image_key(uuid.uuid4(), datetime.now(UTC), "png")
    fresh = media / image_key(uuid.uuid4(), datetime.now(UTC), "webp")
    for path in (old, fresh):
        path.write_bytes(b"orphan")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    return old, fresh, keys


def test_storage_gc_lists_then_deletes_only_old_orphans(
    workdir: Path, aged_orphan: tuple[Path, Path, list[str]]
) -> None:
    old, fresh, keys = aged_orphan
    media = workdir / "caverna-data" / "media"
    before = sorted(p for p in media.rglob("*") if p.is_file())

    code, out, output = run("storage", "gc", "--json")
    assert code == 0, output
    report = json.loads(out)
    assert [item["key"] for item in report["garbage"]] == [old.relative_to(media).as_posix()]
    assert (report["scanned"], report["live"], report["recent"]) == (6, 4, 1)
    assert report["applied"] is False
    assert sorted(p for p in media.rglob("*") if p.is_file()) == before

    code, out, output = run("storage", "gc", "--apply", "--grace-minutes", "60")
    assert code == 0, output
    assert "1 deleted" in out
    assert not old.exists()
    assert fresh.exists()
    assert all((media / key).exists() for key in keys)
    connection = sqlite3.connect(workdir / "caverna-data" / "caverna.db")
    audited = connection.execute("SELECT actor, action, details FROM audit_log").fetchall()
    connection.close()
    assert [(actor, action) for actor, action, _ in audited] == [("cli", "storage_gc")]
    assert json.loads(audited[0][2])["deleted"] == 1


def test_storage_gc_rejects_a_bad_grace_period(
    workdir: Path, aged_orphan: tuple[Path, Path, list[str]]
) -> None:
    old, _fresh, _keys = aged_orphan
    code, _, output = run("storage", "gc", "--apply", "--grace-minutes", "-5")
    assert code == 2
    assert "--grace-minutes" in output
    assert "got -5 minutes" in output
    assert old.exists()


def test_storage_migrate_between_folders(workdir: Path) -> None:
    data = workdir / "caverna-data"
    new_data_dir(data)
    keys = populate(data, 3)
    source, target = f"file://{data / 'media'}", f"file://{workdir / 'copy'}"

    code, out, output = run("storage", "migrate", "--from", source, "--to", target, "--dry-run")
    assert code == 0, output
    assert "would copy" in out
    assert not (workdir / "copy").exists() or not any((workdir / "copy").rglob("*.webp"))

    code, out, output = run("storage", "migrate", "--from", source, "--to", target, "--json")
    assert code == 0, output
    assert (json.loads(out)["copied"], json.loads(out)["skipped"]) == (6, 0)
    for key in keys:
        assert (workdir / "copy" / key).read_bytes() == (data / "media" / key).read_bytes()

    code, out, _ = run("storage", "migrate", "--from", source, "--to", target, "--json")
    assert (code, json.loads(out)["copied"], json.loads(out)["skipped"]) == (0, 0, 6)

    (data / "media" / keys[0]).unlink()
    code, out, _ = run("storage", "migrate", "--from", source, "--to", "memory://", "--json")
    assert code == 1
    assert json.loads(out)["missing"] == [keys[0]]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--from", "ftp://host/x", "--to", "memory://"), "--from: invalid storage URL"),
        (("--from", "memory://", "--to", "s3://a"), "--to: invalid storage URL"),
        (("--from", "file://caverna-data/media", "--to", "file://./caverna-data/media"), "same"),
    ],
)
def test_storage_migrate_rejects_bad_urls(
    workdir: Path, arguments: tuple[str, ...], message: str
) -> None:
    new_data_dir(workdir / "caverna-data")
    code, _, output = run("storage", "migrate", *arguments)
    assert code == 2
    assert message in output
