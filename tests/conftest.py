"""Shared fixtures: the shipped pack, the small test pack, and throwaway copies to break."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from caverna.brand.pack import BrandPack
from caverna.brand.registry import DEFAULT_PACK_ID, PackRegistry
from caverna.prompting.engine import PromptEngine

DATA = Path(__file__).parent / "data"
TEST_PACKS = DATA / "packs"
FOX = TEST_PACKS / "lumen-fox"


@pytest.fixture(scope="session")
def registry() -> PackRegistry:
    return PackRegistry([TEST_PACKS])


@pytest.fixture(scope="session")
def engine(registry: PackRegistry) -> PromptEngine:
    return PromptEngine(registry)


@pytest.fixture(scope="session")
def default_pack(registry: PackRegistry) -> BrandPack:
    return registry.get(DEFAULT_PACK_ID)


@pytest.fixture(scope="session")
def fox(registry: PackRegistry) -> BrandPack:
    return registry.get("lumen-fox")


PackEditor = Callable[[str, Callable[[Any], None]], None]


@pytest.fixture
def fox_copy(tmp_path: Path) -> tuple[Path, PackEditor]:
    """A private copy of the fox pack and a function that edits one of its YAML files."""
    target = tmp_path / "lumen-fox"
    shutil.copytree(FOX, target)

    def edit(file_name: str, change: Callable[[Any], None]) -> None:
        path = target / file_name
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")

    return target, edit
