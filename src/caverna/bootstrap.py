"""The composition root: the one place that chooses implementations and wires them together."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from caverna.brand.registry import PackRegistry
from caverna.config import Settings
from caverna.prompting.engine import PromptEngine


@dataclass(frozen=True)
class Container:
    settings: Settings
    packs: PackRegistry
    prompts: PromptEngine


def build_container(
    settings: Settings | None = None,
    *,
    extra_pack_paths: Iterable[Path] = (),
    packs: PackRegistry | None = None,
) -> Container:
    settings = settings or Settings()
    registry = packs or PackRegistry([*extra_pack_paths, *settings.pack_paths])
    return Container(settings=settings, packs=registry, prompts=PromptEngine(registry))
