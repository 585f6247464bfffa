"""Operator commands: `caverna backup`, `caverna restore`, `caverna storage migrate|gc`.

Backup and restore cover the embedded mode (SQLite and the local media folder); the scale-out
services have their own tools, which docs/operations.md describes, and these commands say so
instead of producing a partial backup.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.bootstrap import HEAD_REVISION, SECRET_FILE, Container, utcnow
from caverna.cli.runtime_scope import EXIT_FAILED, EXIT_INVALID
from caverna.config import Settings
from caverna.db.accounts import SqlAuditStore
from caverna.db.backup import (
    BackupRefused,
    BackupReport,
    EmbeddedPaths,
    RestoreReport,
    create_backup,
    restore_backup,
)
from caverna.db.engine import TransactionRunner, create_engine, is_sqlite
from caverna.db.media_refs import SqlMediaReferences
from caverna.db.migrate import current_revision
from caverna.services.accounts import AuditLog
from caverna.services.media_ops import (
    GcReport,
    MigrationReport,
    check_grace,
    collect_garbage,
    migrate_objects,
)
from caverna.storage.base import ObjectStore, StorageError
from caverna.storage.factory import LocalSpec, parse_storage_url, store_from_url

T = TypeVar("T")
RUNBOOK = "docs/operations.md"

ContainerFactory = Callable[[list[Path] | None], Container]

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (default: CAVERNA_DATA_DIR or ./caverna-data)."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


def _refuse(message: str, code: int = EXIT_INVALID) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def embedded_paths(settings: Settings) -> EmbeddedPaths:
    """The SQLite file and media folder of the embedded mode, or a refusal naming the way out."""
    url = settings.resolved_database_url
    if not is_sqlite(url):
        _refuse(
            "caverna backup/restore cover the embedded mode (SQLite); this deployment uses "
            f"{make_url(url).get_backend_name()}: back it up with pg_dump and pg_restore "
            f"({RUNBOOK}, 'Backups: PostgreSQL')"
        )
    database = make_url(url).database
    if not database or database == ":memory:":
        _refuse("the database is in memory: there is nothing to back up or restore")
    try:
        spec = parse_storage_url(settings.storage_url, data_dir=settings.data_dir)
    except ValueError as exc:
        _refuse(f"CAVERNA_STORAGE_URL: {exc}")
    if not isinstance(spec, LocalSpec):
        _refuse(
            "caverna backup/restore cover media in a local folder; this deployment keeps media "
            f"in {'memory' if settings.storage_url.startswith('memory') else 'a bucket'}: "
            f"use bucket versioning or a bucket-to-bucket copy ({RUNBOOK}, 'Backups: S3 and R2')"
        )
    return EmbeddedPaths(
        database=Path(database), media=spec.root, secret=settings.data_dir / SECRET_FILE
    )


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=quiet,
        console=Console(stderr=True),
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


def register(app: typer.Typer, make_container: ContainerFactory, _fail: Any) -> None:
    """Attach backup, restore and the storage commands to the CLI."""
    storage_app = typer.Typer(
        help="Object storage: copy between stores, collect garbage.", no_args_is_help=True
    )
    app.add_typer(storage_app, name="storage")

    def settings_for(data_dir: Path | None) -> Settings:
        settings = make_container(None).settings
        if data_dir is not None:
            settings = settings.model_copy(update={"data_dir": data_dir})
        return settings

    @app.command("backup")
    def backup(
        out: Annotated[
            Path, typer.Argument(help="Archive to write (.tar, or .tar.gz to compress).")
        ],
        data_dir: DataDirOpt = None,
        as_json: JsonOut = False,
    ) -> None:
        """Back up the embedded mode while it runs: a database snapshot, media and secret."""
        paths = embedded_paths(settings_for(data_dir))
        try:
            with _progress("media", as_json) as update:
                report = asyncio.run(create_backup(paths, out, progress=update))
        except BackupRefused as exc:
            _refuse(str(exc))
        except (StorageError, OSError) as exc:  # a full disk, a folder that cannot be read
            _refuse(f"backup failed, no archive written: {exc}", EXIT_FAILED)
        _print_backup(report, as_json)

    @app.command("restore")
    def restore(
        archive: Annotated[Path, typer.Argument(help="An archive written by `caverna backup`.")],
        data_dir: DataDirOpt = None,
        force: Annotated[
            bool, typer.Option("--force", help="Replace the database and media already there.")
        ] = False,
        as_json: JsonOut = False,
    ) -> None:
        """Restore a backup into an empty data folder, verifying every member first.

        Stop the server and workers of that folder first. Exit code 1 when the restored data
        has rows whose objects are missing or differ (they are listed).
        """
        paths = embedded_paths(settings_for(data_dir))
        try:
            with _progress("members", as_json) as update:
                report = asyncio.run(restore_backup(archive, paths, force=force, progress=update))
        except BackupRefused as exc:
            _refuse(str(exc))
        except (StorageError, OSError) as exc:
            _refuse(f"restore failed: {exc}", EXIT_FAILED)
        _print_restore(report, as_json)
        if not report.consistent:
            raise typer.Exit(EXIT_FAILED)

    @storage_app.command("migrate")
    def migrate(
        source: Annotated[str, typer.Option("--from", help="Storage URL to copy from.")],
        target: Annotated[str, typer.Option("--to", help="Storage URL to copy to.")],
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Compare only; write nothing.")
        ] = False,
        concurrency: Annotated[
            int, typer.Option(min=1, max=64, help="Objects copied at once.")
        ] = 8,
        as_json: JsonOut = False,
    ) -> None:
        """Copy every object the image rows name to another store, verified by sha256.

        Objects already there with the same sha256 are skipped, so a second run resumes an
        interrupted one. The source is never changed. Exit code 1 when any object is missing,
        corrupt or failed.
        """
        settings = settings_for(None)
        source_store = _store(source, settings, "--from")
        target_store = _store(target, settings, "--to")
        if _same_store(source, target, settings):
            _refuse("--from and --to name the same store")

        async def work(engine: AsyncEngine) -> MigrationReport:
            with _progress("objects", as_json) as update:
                return await migrate_objects(
                    source_store,
                    target_store,
                    SqlMediaReferences(engine),
                    dry_run=dry_run,
                    concurrency=concurrency,
                    progress=update,
                )

        report = _with_database(settings, work, (source_store, target_store))
        _print_migration(report, as_json)
        if not report.ok:
            raise typer.Exit(EXIT_FAILED)

    @storage_app.command("gc")
    def gc(
        grace_minutes: Annotated[
            int,
            typer.Option(
                "--grace-minutes",
                help="Spare objects written this recently (in-flight jobs).",
            ),
        ] = 60,
        apply: Annotated[
            bool,
            typer.Option("--apply/--dry-run", help="Delete (--apply) or only list (default)."),
        ] = False,
        as_json: JsonOut = False,
    ) -> None:
        """Find objects under images/ and thumbs/ that no live image row names, and delete them.

        Without --apply nothing changes. Deletions are recorded in the audit log.
        """
        try:
            grace = check_grace(timedelta(minutes=grace_minutes))
        except (ValueError, OverflowError) as exc:
            _refuse(f"--grace-minutes: {exc}")
        settings = settings_for(None)
        store = _store(settings.storage_url, settings, "CAVERNA_STORAGE_URL")

        async def work(engine: AsyncEngine) -> GcReport:
            runner = TransactionRunner(engine)
            try:
                with _progress("deleting", as_json or not apply) as update:
                    return await collect_garbage(
                        store,
                        SqlMediaReferences(engine),
                        grace=grace,
                        apply=apply,
                        clock=utcnow,
                        audit=AuditLog(SqlAuditStore(runner), utcnow),
                        actor="cli",
                        progress=update,
                    )
            finally:
                runner.close()

        report = _with_database(settings, work, (store,))
        _print_gc(report, as_json)
        if report.failed:
            raise typer.Exit(EXIT_FAILED)


def _store(url: str, settings: Settings, name: str) -> ObjectStore:
    try:
        return store_from_url(url, data_dir=settings.data_dir)
    except ValueError as exc:
        _refuse(f"{name}: {exc}")
    except StorageError as exc:
        _refuse(f"{name}: {exc}", EXIT_FAILED)


def _same_store(first: str, second: str, settings: Settings) -> bool:
    one = parse_storage_url(first, data_dir=settings.data_dir)
    two = parse_storage_url(second, data_dir=settings.data_dir)
    if isinstance(one, LocalSpec) and isinstance(two, LocalSpec):
        return one.root.resolve() == two.root.resolve()
    return one == two and not first.strip().lower().startswith("memory")


def _with_database(
    settings: Settings,
    work: Callable[[AsyncEngine], Awaitable[T]],
    stores: tuple[ObjectStore, ...],
) -> T:
    url = settings.resolved_database_url

    async def main() -> T:
        engine = create_engine(url)
        try:
            revision = await current_revision(engine)
            if revision != HEAD_REVISION:
                _refuse(
                    f"the database is at revision {revision or 'none'}, this code needs "
                    f"{HEAD_REVISION}: run `caverna db upgrade` first",
                    EXIT_FAILED,
                )
            return await work(engine)
        finally:
            for store in stores:
                await store.close()
            await engine.dispose()

    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).is_file():
            _refuse(f"there is no database at {database}", EXIT_FAILED)
    try:
        return asyncio.run(main())
    except StorageError as exc:
        _refuse(str(exc), EXIT_FAILED)


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _print_backup(report: BackupReport, as_json: bool) -> None:
    data = {
        "archive": str(report.archive),
        "schema_revision": report.schema_revision,
        "rows": report.rows,
        "objects": report.objects,
        "bytes": report.bytes,
        "referenced_objects": report.referenced,
        "missing_objects": report.missing,
        "mismatched_objects": report.mismatched,
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        images = report.rows.get("generated_images", 0)
        typer.echo(
            f"backup written to {report.archive}: schema {report.schema_revision}, "
            f"{images} image row(s), {report.objects} object(s), {report.bytes} bytes"
        )
    for key in report.missing:
        typer.echo(f"warning: {key} is named by a row but was gone from the media folder", err=True)
    for key in report.mismatched:
        typer.echo(f"warning: {key} does not have the sha256 its row recorded", err=True)


def _print_restore(report: RestoreReport, as_json: bool) -> None:
    data = {
        "members": report.members,
        "objects": report.objects,
        "schema_revision": report.schema_revision,
        "upgraded_to": report.upgraded_to,
        "integrity": report.integrity,
        "referenced_objects": report.referenced,
        "missing_objects": report.missing,
        "mismatched_objects": report.mismatched,
        "missing_at_backup": report.missing_at_backup,
        "consistent": report.consistent,
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        upgraded = f", migrated to {report.upgraded_to}" if report.upgraded_to else ""
        typer.echo(
            f"restored {report.members} member(s) ({report.objects} object(s)), every sha256 "
            f"verified; schema {report.schema_revision}{upgraded}; integrity {report.integrity}; "
            f"{report.referenced} referenced object(s) checked"
        )
    for key in report.missing:
        typer.echo(f"problem: {key} is named by a row but is not in the media folder", err=True)
    for key in report.mismatched:
        typer.echo(f"problem: {key} does not have the sha256 its row recorded", err=True)


def _print_migration(report: MigrationReport, as_json: bool) -> None:
    data = {
        "dry_run": report.dry_run,
        "total": report.total,
        "copied": report.copied,
        "skipped": report.skipped,
        "not_made": report.not_made,
        "bytes_copied": report.bytes_copied,
        "missing": report.missing,
        "corrupt": report.corrupt,
        "failed": [{"key": key, "error": error} for key, error in report.failed],
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="storage migrate" + (" (dry run)" if report.dry_run else ""))
    table.add_column("objects")
    table.add_column("count", justify="right")
    rows = (
        ("named by live rows", report.total),
        ("would copy" if report.dry_run else "copied and verified", report.copied),
        ("already there (same sha256)", report.skipped),
        ("thumbnails not made yet", report.not_made),
        ("missing from the source", len(report.missing)),
        ("corrupt in the source", len(report.corrupt)),
        ("failed", len(report.failed)),
    )
    for label, count in rows:
        table.add_row(label, str(count))
    _console().print(table)
    for key in report.missing:
        typer.echo(f"missing: {key}", err=True)
    for key in report.corrupt:
        typer.echo(f"corrupt: {key}", err=True)
    for key, error in report.failed:
        typer.echo(f"failed: {key}: {error}", err=True)


def _print_gc(report: GcReport, as_json: bool) -> None:
    data = {
        "applied": report.applied,
        "scanned": report.scanned,
        "live": report.live,
        "recent": report.recent,
        "garbage": [
            {
                "key": item.key,
                "size": item.size,
                "last_modified": item.last_modified.isoformat(),
                "reason": item.reason,
            }
            for item in report.garbage
        ],
        "garbage_bytes": report.garbage_bytes,
        "deleted": report.deleted,
        "failed": [{"key": key, "error": error} for key, error in report.failed],
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for item in report.garbage:
        typer.echo(f"{item.key}\t{item.size}\t{item.reason}")
    outcome = (
        f"{report.deleted} deleted"
        if report.applied
        else "nothing deleted (dry run; --apply deletes them)"
    )
    typer.echo(
        f"scanned {report.scanned} object(s): {report.live} in use, {report.recent} too recent "
        f"to judge, {len(report.garbage)} unreferenced ({report.garbage_bytes} bytes); {outcome}"
    )
    for key, error in report.failed:
        typer.echo(f"failed: {key}: {error}", err=True)
