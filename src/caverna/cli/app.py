"""The `caverna` command line: thin commands over the container's services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from caverna import __version__
from caverna.bootstrap import Container, build_container
from caverna.brand.schema import Locale
from caverna.cli import (
    keys_commands,
    ops_commands,
    report_commands,
    runtime_commands,
    serve_command,
    webhooks_commands,
)
from caverna.cli.options import (
    AspectRatioOpt,
    FootwearOpt,
    FrameOpt,
    JsonOpt,
    NoPropsOpt,
    OutfitOpt,
    PackOpt,
    PacksOpt,
    PoseOpt,
    PropOpt,
    ProviderOpt,
    SceneNotesOpt,
    SeedOpt,
    image_params,
)
from caverna.cli.render import compiled_panel, pack_summary, problems_table
from caverna.cli.runtime_scope import EXIT_INVALID
from caverna.config import Settings
from caverna.domain.problems import InvalidPackError, ProblemsError
from caverna.logs import configure_logging
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.services.packs import PackReport, validate_folder, validate_installed

app = typer.Typer(
    name="caverna",
    help="Compile a brand's character bible into on-brand image prompts and images.",
    no_args_is_help=True,
    add_completion=False,
)
pack_app = typer.Typer(help="Brand packs: list, show, validate.", no_args_is_help=True)
app.add_typer(pack_app, name="pack")

LocaleOption = Annotated[str, typer.Option("--locale", help="Language of labels: pt-BR or en.")]


def _container(packs: list[Path] | None) -> Container:
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            name = "CAVERNA_" + "_".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"configuration error: {name}: {error['msg']}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    return build_container(settings, extra_pack_paths=packs or ())


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _locale(value: str) -> Locale:
    if value == "pt-BR":
        return "pt-BR"
    if value == "en":
        return "en"
    raise typer.BadParameter("choose pt-BR or en", param_hint="--locale")


def _fail(error: ProblemsError, as_json: bool) -> NoReturn:
    if as_json:
        typer.echo(json.dumps(error.to_dict(), ensure_ascii=False, indent=2))
    else:
        _console().print(problems_table(error.problems, error.summary))
    raise typer.Exit(EXIT_INVALID)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"caverna {__version__}")
        raise typer.Exit()


# long-running services log at CAVERNA_LOG_LEVEL; commands that answer and exit print their own
# result (often JSON on stdout), so below WARNING their logs show only when a level is asked for
SERVICE_COMMANDS = frozenset({"worker", "serve"})


def _configure_logs(command: str | None) -> None:
    try:
        settings = Settings()
    except ValidationError:
        return  # the command reports the bad setting itself
    level = settings.log_level
    if command not in SERVICE_COMMANDS and "log_level" not in settings.model_fields_set:
        level = "WARNING"
    configure_logging(settings.log_format, level)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Compile a brand's character bible into on-brand image prompts and images."""
    _configure_logs(ctx.invoked_subcommand)


@pack_app.command("list")
def pack_list(
    packs: PacksOpt = None, as_json: JsonOpt = False, locale: LocaleOption = "pt-BR"
) -> None:
    """List installed brand packs."""
    container = _container(packs)
    lang = _locale(locale)
    rows: list[dict[str, Any]] = []
    for location in container.packs.locations().values():
        source = "built-in" if location.builtin else str(location.path)
        try:
            pack = container.packs.get(location.id)
            rows.append(
                {
                    "id": pack.id,
                    "pack_version": pack.version,
                    "label": pack.model.manifest.labels.get(lang),
                    "source": source,
                    "ok": True,
                }
            )
        except InvalidPackError as exc:
            rows.append(
                {
                    "id": location.id,
                    "pack_version": None,
                    "label": None,
                    "source": source,
                    "ok": False,
                    "errors": len(exc.problems),
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(title="brand packs")
    for column in ("id", "version", "name", "source", "status"):
        table.add_column(column)
    for row in rows:
        status = "[green]ok[/]" if row["ok"] else f"[red]{row['errors']} problem(s)[/]"
        table.add_row(
            row["id"], row["pack_version"] or "-", row["label"] or "-", row["source"], status
        )
    _console().print(table)


@pack_app.command("show")
def pack_show(
    pack: Annotated[
        str | None, typer.Argument(help="Pack id (default: the configured pack).")
    ] = None,
    packs: PacksOpt = None,
    as_json: JsonOpt = False,
    locale: LocaleOption = "pt-BR",
) -> None:
    """Show a pack: character, palette, catalog with its rules, and storyboards."""
    container = _container(packs)
    try:
        loaded = container.packs.get(pack or container.settings.default_pack)
    except ProblemsError as exc:
        _fail(exc, as_json)
    if as_json:
        typer.echo(
            json.dumps(
                loaded.model.model_dump(mode="json", by_alias=True), ensure_ascii=False, indent=2
            )
        )
        return
    pack_summary(_console(), loaded, _locale(locale))


@pack_app.command("validate")
def pack_validate(
    path: Annotated[
        Path | None, typer.Argument(help="A pack folder, or a folder of packs.")
    ] = None,
    packs: PacksOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate packs deeply: files, references, and every frame compiled for every provider."""
    reports = (
        validate_folder(path) if path is not None else validate_installed(_container(packs).packs)
    )
    _print_reports(reports, as_json)
    if not all(report.ok for report in reports):
        raise typer.Exit(EXIT_INVALID)


def _print_reports(reports: list[PackReport], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in reports], ensure_ascii=False, indent=2))
        return
    console = _console()
    for report in reports:
        if report.ok:
            console.print(
                f"[green]✓[/] {report.pack_id} {report.version} ({report.path}): valid; "
                f"{report.frames_compiled} frame prompts compiled for "
                f"{len(DIALECT_NAMES)} providers"
            )
        else:
            console.print(
                problems_table(
                    report.problems, f"✗ {report.path}: {len(report.problems)} problem(s)"
                )
            )


@app.command("prompt")
def prompt(
    pack: PackOpt = None,
    pose: PoseOpt = None,
    outfit: OutfitOpt = None,
    footwear: FootwearOpt = None,
    prop: PropOpt = None,
    no_props: NoPropsOpt = False,
    frame: FrameOpt = None,
    sequence: Annotated[
        str | None, typer.Option(help="Compile every frame of this sequence.")
    ] = None,
    aspect_ratio: AspectRatioOpt = None,
    seed: SeedOpt = None,
    scene_notes: SceneNotesOpt = None,
    provider: ProviderOpt = None,
    locale: LocaleOption = "pt-BR",
    packs: PacksOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compile a prompt (or a whole storyboard with --sequence) for one provider."""
    container = _container(packs)
    dialect = provider or container.settings.default_provider
    raw = image_params(
        pack=pack or container.settings.default_pack,
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
    raw["locale"] = locale
    try:
        if sequence is not None:
            results = container.prompts.compile_sequence(sequence, raw, dialect)
        else:
            results = [container.prompts.compile(raw, dialect)]
    except ProblemsError as exc:
        _fail(exc, as_json)
    if as_json:
        data = [r.to_dict() for r in results]
        typer.echo(
            json.dumps(data if sequence else data[0], ensure_ascii=False, indent=2, sort_keys=True)
        )
        return
    console = _console()
    loaded = container.packs.get(raw["pack"])
    lang = _locale(locale)
    total = len(results)
    for index, compiled in enumerate(results, start=1):
        frame_ref = compiled.params["frame"]
        if frame_ref:
            entry = loaded.frames[frame_ref]
            title = f"{index}/{total} · {entry.frame.title.get(lang)} · {dialect}"
            subtitle = entry.frame.beat.get(lang)
        else:
            title, subtitle = f"{loaded.id} · {dialect}", None
        console.print(compiled_panel(compiled, title, subtitle))


runtime_commands.register(app, _container, _fail)
keys_commands.register(app, _container, _fail)
serve_command.register(app, _container, _fail)
webhooks_commands.register(app, _container, _fail)
ops_commands.register(app, _container, _fail)
report_commands.register(app, _container)


def main() -> None:
    app()
