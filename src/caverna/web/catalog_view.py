"""The pack as the pickers show it: options with labels, and which ones a choice rules out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from caverna.brand.pack import BrandPack
from caverna.brand.schema import OPTION_KINDS
from caverna.prompting.engine import PromptEngine
from caverna.web import problem_text

KINDS: tuple[str, ...] = tuple(OPTION_KINDS)
PARAM_OF_KIND = {"pose": "pose", "outfit": "outfit", "footwear": "footwear", "prop": "props"}


@dataclass(frozen=True)
class Choice:
    id: str
    label: str
    description: str


def label(labels: Any, locale: str) -> str:
    return str(labels.pt_br if locale == "pt-BR" else labels.en)


def choices(pack: BrandPack, kind: str, locale: str) -> list[Choice]:
    return [
        Choice(option.id, label(option.labels, locale), label(option.description, locale))
        for option in pack.options(kind).values()  # type: ignore[arg-type]
    ]


def frames(pack: BrandPack, locale: str) -> list[Choice]:
    return [
        Choice(ref, label(entry.frame.title, locale), label(entry.frame.beat, locale))
        for ref, entry in pack.frames.items()
    ]


def clean_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Form values as engine parameters: empty means unset, props as a list, seed as a number."""
    params: dict[str, Any] = {}
    for name in ("pack", "pose", "outfit", "footwear", "frame", "aspect_ratio", "locale"):
        value = raw.get(name)
        if isinstance(value, str) and value.strip():
            params[name] = value.strip()
    props = raw.get("props")
    chosen = [str(p) for p in props if str(p).strip()] if isinstance(props, list) else []
    if chosen:  # none ticked: the frame's (or the pack's) props, as with the other options
        params["props"] = chosen
    seed = raw.get("seed")
    if isinstance(seed, int):
        params["seed"] = seed
    elif isinstance(seed, str) and seed.strip():
        params["seed"] = int(seed) if seed.strip().isdigit() else seed.strip()
    notes = raw.get("scene_notes")
    if isinstance(notes, str) and notes.strip():
        params["scene_notes"] = notes
    return params


def disabled_options(
    engine: PromptEngine,
    pack: BrandPack,
    params: dict[str, Any],
    dialect: str,
    locale: str = "en",
) -> dict[str, dict[str, str]]:
    """For each option not chosen, the reason choosing it (with the rest as is) would fail,
    in the visitor's language."""
    base = {k: v for k, v in params.items() if k != "seed"}
    base["seed"] = 1
    known = {(p.code, p.field, p.message) for p in engine.check(base, dialect)}
    result: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        field = PARAM_OF_KIND[kind]
        reasons: dict[str, str] = {}
        for option_id in pack.options(kind):  # type: ignore[arg-type]
            trial = dict(base)
            if field == "props":
                current = list(base.get("props") or [])
                if option_id in current:
                    continue
                trial["props"] = [*current, option_id]
            else:
                if base.get(field) == option_id:
                    continue
                trial[field] = option_id
            new = [
                p for p in engine.check(trial, dialect) if (p.code, p.field, p.message) not in known
            ]
            if new:
                reasons[option_id] = problem_text.message(
                    new[0].code.value, new[0].message, locale, pack
                )
        result[kind] = reasons
    return result
