"""`caverna report`: a storyboard's continuity and the approval analytics, from the database.

The numbers are the API's (both read the reports the derivatives pass stored); the CLI adds
tables for a terminal and writes the PNGs (contact sheet, chart) to a file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from caverna.bootstrap import Container, Runtime
from caverna.cli.options import JsonOpt
from caverna.cli.runtime_scope import EXIT_FAILED, EXIT_INVALID, run_on_runtime
from caverna.consistency.analytics import GroupField, GroupStats
from caverna.services.consistency_reports import (
    SequenceReport,
    group_dict,
    parse_group_by,
    sequence_report,
    sequence_sheet,
    template_chart,
    template_report,
)

T = TypeVar("T")

ContainerFactory = Callable[[list[Path] | None], Container]

OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Also write the PNG (contact sheet or chart) here.")
]


def register(app: typer.Typer, make_container: ContainerFactory) -> None:
    report_app = typer.Typer(
        help="Consistency reports: a storyboard's continuity, approvals per template.",
        no_args_is_help=True,
    )
    app.add_typer(report_app, name="report")

    def run(work: Callable[[Runtime], Awaitable[T]]) -> T:
        container = make_container(None)

        return run_on_runtime(container, work)

    @report_app.command("sequence")
    def report_sequence(
        sequence_id: Annotated[str, typer.Argument(help="The storyboard run's id.")],
        out: OutOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Palette and brightness drift between frames, and the frames that break continuity."""
        try:
            wanted = uuid.UUID(sequence_id)
        except ValueError:
            typer.echo(f"error: '{sequence_id[:80]}' is not a sequence id (a UUID)", err=True)
            raise typer.Exit(EXIT_INVALID) from None

        async def work(runtime: Runtime) -> tuple[SequenceReport, bytes | None] | None:
            jobs = await runtime.jobs.for_sequence(wanted)
            if not jobs:
                return None
            report = sequence_report(wanted, jobs, runtime.container.packs)
            sheet = await sequence_sheet(report, jobs, runtime.store) if out else None
            return report, sheet

        found = run(work)
        if found is None:
            typer.echo(f"error: no sequence {wanted}", err=True)
            raise typer.Exit(EXIT_FAILED)
        report, sheet = found
        if out is not None and sheet is not None:
            _write(out, sheet)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2, sort_keys=True))
            return
        console = Console(highlight=False, soft_wrap=False)
        console.print(_sequence_table(report))
        if report.continuity is None:
            console.print("no frame has a consistency report yet")
        elif report.continuity.breaks:
            for frame in report.continuity.breaks:
                reasons = "; ".join(report.continuity.reasons.get(frame, ()))
                console.print(f"[red]break[/] {frame}: {reasons}")
        else:
            console.print("[green]no frame breaks continuity[/]")
        if out is not None:
            console.print(f"contact sheet: {out}")

    @report_app.command("templates")
    def report_templates(
        out: OutOpt = None,
        by: Annotated[
            str | None,
            typer.Option(
                "--by",
                help="Group by these fields, comma-separated: template_version, provider, pose,"
                " frame, variant (default: all).",
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Approval rate (Wilson 95% interval) and mean consistency score per group."""
        try:
            fields = parse_group_by(by)
        except ValueError as exc:
            typer.echo(f"error: --by: {exc}", err=True)
            raise typer.Exit(EXIT_INVALID) from None

        async def work(runtime: Runtime) -> tuple[list[GroupStats], bytes | None]:
            stats = await template_report(runtime.jobs, fields)
            return stats, (await template_chart(stats) if out else None)

        stats, chart = run(work)
        if out is not None and chart is not None:
            _write(out, chart)
        if as_json:
            rows = [group_dict(s, fields) for s in stats]
            typer.echo(json.dumps({"by": list(fields), "groups": rows}, indent=2, sort_keys=True))
            return
        console = Console(highlight=False, soft_wrap=False)
        console.print(_templates_table(stats, fields))
        if out is not None:
            console.print(f"chart: {out}")


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        typer.echo(f"error: cannot write {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _sequence_table(report: SequenceReport) -> Table:
    data: dict[str, Any] = report.to_dict()
    incoming = {t["after"]: t for t in (data["continuity"] or {}).get("transitions", [])}
    table = Table(title=f"sequence {report.sequence_id}")
    for column in ("#", "frame", "status", "score", "palette", "light", "ΔE", "Δ bright", ""):
        table.add_column(column)
    for number, frame in enumerate(data["frames"], start=1):
        step = incoming.get(frame["frame_id"])
        table.add_row(
            str(number),
            frame["title"],
            frame["consistency_status"] or frame["status"],
            _score(frame["score"]),
            _score(frame["palette"]),
            _score(frame["lighting"]),
            "-" if step is None else f"{step['palette_delta_e']:.1f}",
            "-" if step is None else f"{step['brightness_delta']:+.2f}",
            "[red]BREAK[/]" if frame["breaks"] else "",
        )
    return table


def _templates_table(stats: list[GroupStats], fields: tuple[GroupField, ...]) -> Table:
    table = Table(title="approvals per group")
    for column in (*fields, "images", "reviewed", "approval", "95% CI", "mean score"):
        table.add_column(column)
    for s in stats:
        rate = "-" if s.approval_rate is None else f"{s.approval_rate:.0%}"
        ci = "-" if s.interval is None else f"{s.interval[0]:.0%}-{s.interval[1]:.0%}"
        table.add_row(*s.key, str(s.count), str(s.reviewed), rate, ci, _score(s.mean_score))
    return table
