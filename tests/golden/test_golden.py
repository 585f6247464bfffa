"""Golden files: the compiled prompts of three storyboard frames in every dialect.

A diff here is a change of what providers receive. When it is intended (the pack or a compiler
changed), regenerate with CAVERNA_UPDATE_GOLDEN=1 and review the diff like any other change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from caverna.brand.registry import PackRegistry
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.prompting.engine import PromptEngine

GOLDEN = Path(__file__).parent / "data"
FRAMES = ("the-invitation", "carving-the-goals", "emerging-stronger")
UPDATE = os.environ.get("CAVERNA_UPDATE_GOLDEN") == "1"
ENGINE = PromptEngine(PackRegistry(include_builtin=True))


@pytest.mark.parametrize("dialect", DIALECT_NAMES)
@pytest.mark.parametrize("frame", FRAMES)
def test_compiled_prompt_matches_golden_file(frame: str, dialect: str) -> None:
    compiled = ENGINE.compile({"frame": f"onboarding/{frame}", "seed": 1234}, dialect)
    path = GOLDEN / f"{frame}.{dialect}.json"
    text = compiled.to_json() + "\n"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path.name}: run with CAVERNA_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")
