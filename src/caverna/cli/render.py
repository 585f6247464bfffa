"""Rich renderings shared by CLI commands: problems, compiled prompts, pack summaries."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from caverna.brand.pack import BrandPack
from caverna.brand.schema import OPTION_KINDS, Locale, OptionKind
from caverna.domain.problems import Problem
from caverna.prompting.dialects.base import CompiledPrompt

MAX_ALLOWED_SHOWN = 8
OPTION_TITLES: dict[OptionKind, str] = {
    "pose": "poses",
    "outfit": "outfits",
    "footwear": "footwear",
    "prop": "props",
}


def problems_table(problems: Iterable[Problem], title: str) -> Table:
    table = Table(title=title, title_style="bold red", show_lines=False, expand=False)
    table.add_column("code", style="red", no_wrap=True)
    table.add_column("where", style="cyan")
    table.add_column("problem")
    for problem in problems:
        where = f"{problem.file}: {problem.field}" if problem.file else problem.field
        detail = Text(problem.message)
        if problem.suggestion:
            detail.append(f"\ndid you mean '{problem.suggestion}'?", style="green")
        if problem.allowed:
            shown = ", ".join(problem.allowed[:MAX_ALLOWED_SHOWN])
            more = len(problem.allowed) - MAX_ALLOWED_SHOWN
            suffix = f" (+{more} more)" if more > 0 else ""
            detail.append(f"\nallowed: {shown}{suffix}", style="dim")
        table.add_row(problem.code.value, where, detail)
    return table


def compiled_panel(compiled: CompiledPrompt, title: str, subtitle: str | None = None) -> Panel:
    parts: list[Text | Table] = []
    if subtitle:
        parts.append(Text(subtitle, style="italic"))
    parts.append(Text(compiled.prompt))
    if compiled.negative_prompt:
        parts.append(Text.assemble(("negative: ", "bold magenta"), compiled.negative_prompt))
    meta = Table.grid(padding=(0, 2))
    meta.add_column(style="dim")
    meta.add_column()
    params = compiled.params
    meta.add_row(
        "pose / outfit / footwear", f"{params['pose']} / {params['outfit']} / {params['footwear']}"
    )
    meta.add_row("props", ", ".join(params["props"]) or "none")
    meta.add_row("aspect ratio / seed", f"{params['aspect_ratio']} / {compiled.seed}")
    meta.add_row("template / params", f"{compiled.template_version} / {compiled.params_hash[:16]}")
    for key in ("size", "width", "height", "aspect_ratio"):
        if key in compiled.payload:
            meta.add_row(f"payload {key}", str(compiled.payload[key]))
    parts.append(meta)
    for warning in compiled.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Panel(Group(*parts), title=title, title_align="left", border_style="blue")


def pack_summary(console: Console, pack: BrandPack, locale: Locale) -> None:
    manifest = pack.model.manifest
    foundation = pack.model.foundation
    character = foundation.character
    console.print(
        Panel(
            Group(
                Text(manifest.description.get(locale)),
                Text(
                    f"{character.name}: {character.proportions.head_heights:g} heads tall. "
                    f"{character.proportions.build}"
                ),
                Text(
                    "signature marks: "
                    + "; ".join(m.description.get(locale) for m in character.signature_marks)
                ),
                Text("aspect ratios: " + ", ".join(foundation.technical.aspect_ratios)),
            ),
            title=f"{manifest.labels.get(locale)} — {pack.id} {pack.version}",
            title_align="left",
        )
    )
    palette = Table(title="palette", show_header=False)
    for color in foundation.technical.palette:
        palette.add_row(Text("   ", style=f"on {color.hex}"), color.name, color.hex, color.role)
    console.print(palette)
    for kind in OPTION_KINDS:
        label = OPTION_TITLES[kind]
        table = Table(title=f"{label} ({len(pack.options(kind))})", title_justify="left")
        table.add_column("id", style="cyan", no_wrap=True)
        table.add_column("label")
        table.add_column("rules", style="dim")
        for option in pack.options(kind).values():
            rules = []
            hands = getattr(option, "free_hands", None)
            if hands is not None:
                rules.append(f"{hands} free hand(s)")
            held = getattr(option, "hands", None)
            if held is not None:
                rules.append(f"uses {held} hand(s)")
            if option.excludes:
                rules.append("excludes " + ", ".join(option.excludes))
            if option.requires:
                rules.append("requires " + ", ".join(option.requires))
            if option.only_in_frames:
                rules.append("only in " + ", ".join(option.only_in_frames))
            table.add_row(option.id, option.labels.get(locale), "; ".join(rules))
        console.print(table)
    for sequence in pack.sequences.values():
        table = Table(
            title=f"sequence {sequence.id}: {sequence.labels.get(locale)}", title_justify="left"
        )
        table.add_column("#", justify="right")
        table.add_column("frame", style="cyan")
        table.add_column("beat")
        table.add_column("text space", style="dim")
        for index, frame in enumerate(sequence.frames, start=1):
            table.add_row(
                str(index), frame.title.get(locale), frame.beat.get(locale), frame.text_space.side
            )
        console.print(table)
