"""Commands that run the pipeline: generate, sequence generate, worker, db, cache."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from caverna.bootstrap import (
    Container,
    Runtime,
    provider_health,
    utcnow,
)
from caverna.cli.options import (
    AspectRatioOpt,
    FootwearOpt,
    FrameOpt,
    JsonOpt,
    NoPropsOpt,
    OutfitOpt,
    OutOpt,
    PackOpt,
    PacksOpt,
    PoseOpt,
    PropOpt,
    ProviderOpt,
    SceneNotesOpt,
    SeedOpt,
    UserOpt,
    image_params,
)
from caverna.cli.runtime_scope import EXIT_FAILED, EXIT_INVALID, run_on_runtime
from caverna.db.migrate import upgrade
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.domain.problems import ProblemsError
from caverna.metrics_server import MetricsServer, queue_collector
from caverna.services.quotas import QuotaExceeded
from caverna.services.safety import ModerationUnavailable

T = TypeVar("T")
POLL_SECONDS = 0.2

ContainerFactory = Callable[[list[Path] | None], Container]
FailHandler = Callable[[ProblemsError, bool], Any]


def register(app: typer.Typer, make_container: ContainerFactory, fail: FailHandler) -> None:
    """Attach the pipeline commands to the CLI (the container factory handles bad settings)."""
    sequence_app = typer.Typer(help="Storyboards: generate every frame.", no_args_is_help=True)
    db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)
    cache_app = typer.Typer(help="The prompt cache.", no_args_is_help=True)
    app.add_typer(sequence_app, name="sequence")
    app.add_typer(db_app, name="db")
    app.add_typer(cache_app, name="cache")
    providers_app = typer.Typer(help="Image providers: health and breaker state.")
    app.add_typer(providers_app, name="providers")

    @providers_app.command("status")
    def providers_status(as_json: JsonOpt = False) -> None:
        """Each configured provider in failover order: health probe and circuit breaker."""

        async def work(runtime: Runtime) -> list[dict[str, Any]]:
            return await provider_health(runtime)

        rows = run(work, None)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="providers (failover order)")
        for column in ("provider", "health", "breaker", "detail"):
            table.add_column(column)
        for row in rows:
            health = {True: "[green]up[/]", False: "[red]down[/]", None: "passive"}[row["healthy"]]
            table.add_row(row["provider"], health, row["breaker"], row["detail"])
        Console().print(table)

    def run(
        coroutine_factory: Callable[[Runtime], Awaitable[T]],
        packs: list[Path] | None,
        as_json: bool = False,
    ) -> T:
        container = make_container(packs)

        try:
            return run_on_runtime(container, coroutine_factory)
        except ProblemsError as exc:  # content_blocked included
            fail(exc, as_json)
            raise typer.Exit(EXIT_INVALID) from None
        except (ModerationUnavailable, QuotaExceeded) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_FAILED) from None

    @app.command("generate")
    def generate(
        pack: PackOpt = None,
        pose: PoseOpt = None,
        outfit: OutfitOpt = None,
        footwear: FootwearOpt = None,
        prop: PropOpt = None,
        no_props: NoPropsOpt = False,
        frame: FrameOpt = None,
        aspect_ratio: AspectRatioOpt = None,
        seed: SeedOpt = None,
        scene_notes: SceneNotesOpt = None,
        provider: ProviderOpt = None,
        force: Annotated[
            bool, typer.Option(help="Generate again even if an identical image exists.")
        ] = False,
        out: OutOpt = None,
        user: UserOpt = "local",
        packs: PacksOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Generate one image: submit, process (in this process), store, and report where it is.

        Without --seed a seed is drawn, so the image can be made again exactly.
        """
        raw = image_params(
            pack=pack,
            pose=pose,
            outfit=outfit,
            footwear=footwear,
            prop=prop,
            no_props=no_props,
            frame=frame,
            aspect_ratio=aspect_ratio,
            seed=seed,
            scene_notes=scene_notes,
        )

        async def work(runtime: Runtime) -> ImageJob:
            await runtime.safety.check_params(raw)
            result = await runtime.generation.submit(user, raw, provider=provider, force=force)
            jobs = [result.job.id]
            done = await _wait_with_worker(runtime, jobs, quiet=as_json)
            return done[0]

        job = run(work, packs, as_json)
        _report(job, out, as_json, packs, run)

    @sequence_app.command("generate")
    def sequence_generate(
        sequence: Annotated[str, typer.Option(help="Sequence id, e.g. onboarding.")] = "onboarding",
        pack: PackOpt = None,
        outfit: OutfitOpt = None,
        footwear: FootwearOpt = None,
        aspect_ratio: AspectRatioOpt = None,
        seed: SeedOpt = None,
        scene_notes: SceneNotesOpt = None,
        provider: ProviderOpt = None,
        out: OutOpt = None,
        user: UserOpt = "local",
        packs: PacksOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Generate every frame of a storyboard with one shared seed, showing progress per frame."""
        raw = image_params(
            pack=pack,
            outfit=outfit,
            footwear=footwear,
            aspect_ratio=aspect_ratio,
            seed=seed,
            scene_notes=scene_notes,
        )

        async def work(runtime: Runtime) -> tuple[uuid.UUID, list[ImageJob]]:
            await runtime.safety.check_params(raw)
            submitted = await runtime.generation.submit_sequence(
                user, sequence, raw, provider=provider
            )
            ids = [job.id for job in submitted.jobs]
            return submitted.sequence_id, await _wait_with_worker(runtime, ids, quiet=as_json)

        sequence_id, jobs = run(work, packs, as_json)
        _report_many(sequence_id, jobs, out, as_json, packs, run)

    @app.command("worker")
    def worker(
        concurrency: Annotated[
            int | None, typer.Option(help="Jobs at once (default: setting).")
        ] = None,
        max_jobs: Annotated[
            int | None, typer.Option("--max-jobs", help="Stop after this many jobs.")
        ] = None,
        packs: Annotated[
            list[Path] | None, typer.Option("--packs", help="Extra pack folder.")
        ] = None,
        metrics_port: Annotated[
            int | None,
            typer.Option(
                "--metrics-port",
                min=0,
                max=65535,
                help="Serve /metrics and /healthz on this port (0: any free one; default: "
                "CAVERNA_WORKER_METRICS_PORT, else no endpoint).",
            ),
        ] = None,
        metrics_host: Annotated[
            str | None,
            typer.Option(
                "--metrics-host",
                help="Address of the metrics endpoint (default: CAVERNA_WORKER_METRICS_HOST, "
                "127.0.0.1).",
            ),
        ] = None,
    ) -> None:
        """Process queued jobs until stopped (SIGTERM or Ctrl-C finish the jobs in hand first).

        With a metrics port, the provider metrics this process counts and the queue gauges are
        served at /metrics, and /healthz answers 200 while the loop runs.
        """

        async def work(runtime: Runtime) -> int:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            await runtime.warm_image_pool()
            instance = runtime.worker(concurrency=concurrency)
            running: list[asyncio.Task[None]] = []
            settings = runtime.settings
            port = metrics_port if metrics_port is not None else settings.worker_metrics_port
            server = None
            if port is not None:
                host = metrics_host or settings.worker_metrics_host
                server = await _serve_metrics(
                    runtime, host, port, alive=lambda: bool(running) and not running[0].done()
                )
            typer.echo(f"worker {instance.worker_id} started", err=True)
            background = runtime.background(stop)
            try:
                running.append(asyncio.create_task(instance.run(stop, max_jobs=max_jobs)))
                await running[0]
            finally:
                stop.set()
                await asyncio.gather(*background, return_exceptions=True)
                if server is not None:
                    await server.aclose()
            return instance.processed

        processed = run(work, packs)
        typer.echo(f"worker stopped after {processed} job(s)", err=True)

    @db_app.command("upgrade")
    def db_upgrade(
        packs: Annotated[list[Path] | None, typer.Option("--packs", hidden=True)] = None,
    ) -> None:
        """Migrate the configured database to the newest schema."""
        settings = make_container(packs).settings
        asyncio.run(upgrade(settings.resolved_database_url))
        typer.echo("database is up to date")

    @cache_app.command("stats")
    def cache_stats(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Entries per provider dialect, expired entries, hits and misses."""

        async def work(runtime: Runtime) -> Any:
            return await runtime.cache.stats(utcnow())

        stats = run(work, None)
        data = {
            "entries": stats.entries,
            "expired": stats.expired,
            "hits": stats.hits,
            "misses": stats.misses,
            "hit_rate": round(stats.hit_rate, 4),
            "by_dialect": dict(stats.by_dialect),
        }
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        table = Table(title="prompt cache")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key in ("entries", "expired", "hits", "misses", "hit_rate"):
            table.add_row(key, str(data[key]))
        for dialect, count in sorted(stats.by_dialect.items()):
            table.add_row(f"entries: {dialect}", str(count))
        Console().print(table)

    @cache_app.command("prune")
    def cache_prune(
        everything: Annotated[bool, typer.Option("--all", help="Remove every entry.")] = False,
    ) -> None:
        """Remove expired entries (or all of them)."""

        async def work(runtime: Runtime) -> int:
            return await runtime.cache.prune(utcnow(), everything=everything)

        removed = run(work, None)
        typer.echo(f"removed {removed} cache entr{'y' if removed == 1 else 'ies'}")


async def _serve_metrics(
    runtime: Runtime, host: str, port: int, *, alive: Callable[[], bool]
) -> MetricsServer:
    """Start the worker's metrics endpoint before it claims anything: a port that cannot be
    had stops the worker at once, with the reason, rather than leaving it running unwatched."""
    assert runtime.metrics is not None
    registry = runtime.metrics.registry
    collector = queue_collector(
        registry, runtime.jobs, providers=list(runtime.providers), clock=runtime.clock
    )
    server = MetricsServer(registry, alive=alive, collector=collector)
    try:
        bound_host, bound_port = await server.start(host, port)
    except OSError as exc:
        typer.echo(f"error: cannot serve metrics on {host}:{port}: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    typer.echo(f"metrics on http://{shown}:{bound_port}/metrics", err=True)
    return server


async def _wait_with_worker(
    runtime: Runtime, job_ids: list[uuid.UUID], *, quiet: bool
) -> list[ImageJob]:
    """Run a worker in this process until every job is terminal, with a progress bar."""
    stop = asyncio.Event()
    worker_task = asyncio.create_task(runtime.worker().run(stop))
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        disable=quiet,
        transient=False,
    )
    tasks: dict[uuid.UUID, TaskID] = {}
    try:
        with progress:
            while True:
                jobs = [await runtime.jobs.get(job_id) for job_id in job_ids]
                for index, job in enumerate(jobs):
                    assert job is not None
                    label = job.frame_id.split("/")[-1] if job.frame_id else str(job.id)[:8]
                    if job.id not in tasks:
                        tasks[job.id] = progress.add_task(
                            f"{index + 1}. {label}", total=1.0, status=job.status.value
                        )
                    progress.update(tasks[job.id], completed=job.progress, status=job.status.value)
                if all(job is not None and job.terminal for job in jobs):
                    return [job for job in jobs if job is not None]
                if worker_task.done():
                    worker_task.result()  # surfaces an unexpected worker crash
                await asyncio.sleep(POLL_SECONDS)
    finally:
        stop.set()
        await worker_task


def _location(runtime: Runtime, job: ImageJob) -> Awaitable[str | None]:
    async def find() -> str | None:
        if job.storage_key is None:
            return None
        path = runtime.store.local_path(job.storage_key)
        if path is not None:
            return str(path)
        return await runtime.store.url(job.storage_key)

    return find()


def _job_summary(job: ImageJob, location: str | None, copied: str | None) -> dict[str, Any]:
    return {
        "image_id": str(job.id),
        "status": job.status.value,
        "frame": job.frame_id,
        "provider": job.provider,
        "seed": job.seed,
        "location": location,
        "copied_to": copied,
        "width": job.width,
        "height": job.height,
        "sha256": job.sha256,
        "error_code": job.error_code,
        "error_message": job.error_message,
    }


def _collect(
    jobs: list[ImageJob], out: Path | None, packs: list[Path] | None, run: Any
) -> list[dict[str, Any]]:
    async def work(runtime: Runtime) -> list[dict[str, Any]]:
        summaries = []
        for job in jobs:
            location = await _location(runtime, job)
            copied = None
            if out is not None and job.status is JobStatus.COMPLETED and job.storage_key:
                out.mkdir(parents=True, exist_ok=True)
                extension = job.storage_key.rsplit(".", 1)[-1]
                name = (
                    f"{job.frame_index + 1:02d}-{job.frame_id.split('/')[-1]}"
                    if (job.frame_id and job.frame_index is not None)
                    else str(job.id)
                )
                target = out / f"{name}.{extension}"
                target.write_bytes(await runtime.store.get(job.storage_key))
                copied = str(target)
            summaries.append(_job_summary(job, location, copied))
        return summaries

    result: list[dict[str, Any]] = run(work, packs)
    return result


def _report(
    job: ImageJob, out: Path | None, as_json: bool, packs: list[Path] | None, run: Any
) -> None:
    (summary,) = _collect([job], out, packs, run)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif job.status is JobStatus.COMPLETED:
        typer.echo(f"image {summary['image_id']} stored at {summary['location']}")
        if summary["copied_to"]:
            typer.echo(f"copied to {summary['copied_to']}")
    else:
        typer.echo(
            f"image {summary['image_id']} {job.status.value}: "
            f"{job.error_code or ''} {job.error_message or ''}".rstrip(),
            err=True,
        )
    if job.status is not JobStatus.COMPLETED:
        raise typer.Exit(EXIT_FAILED)


def _report_many(
    sequence_id: uuid.UUID,
    jobs: list[ImageJob],
    out: Path | None,
    as_json: bool,
    packs: list[Path] | None,
    run: Any,
) -> None:
    summaries = _collect(jobs, out, packs, run)
    failed = [job for job in jobs if job.status is not JobStatus.COMPLETED]
    if as_json:
        typer.echo(json.dumps({"sequence_id": str(sequence_id), "frames": summaries}, indent=2))
    else:
        table = Table(title=f"sequence {sequence_id}")
        for column in ("#", "frame", "status", "stored at"):
            table.add_column(column)
        for index, summary in enumerate(summaries, start=1):
            table.add_row(
                str(index),
                (summary["frame"] or "").split("/")[-1],
                summary["status"],
                summary["copied_to"] or summary["location"] or summary["error_code"] or "",
            )
        Console(width=200).print(table)
    if failed:
        raise typer.Exit(EXIT_FAILED)
