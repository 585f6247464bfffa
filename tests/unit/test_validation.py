"""Shape checks, references with suggestions, and the guarantee that nothing partial escapes."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from caverna.domain.problems import InvalidParametersError, Problem
from caverna.prompting.engine import PromptEngine
from caverna.prompting.params import MAX_SEED


def rejected(engine: PromptEngine, params: Any, dialect: str = "preview") -> list[Problem]:
    with pytest.raises(InvalidParametersError) as caught:
        engine.compile(params, dialect)
    return list(caught.value.problems)


def by_field(problems: list[Problem]) -> dict[str, Problem]:
    return {p.field: p for p in problems}


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"seed": "12"}, "seed", "invalid_type"),
        ({"seed": 1.5}, "seed", "invalid_type"),
        ({"seed": True}, "seed", "invalid_type"),
        ({"seed": -1}, "seed", "out_of_range"),
        ({"seed": MAX_SEED + 1}, "seed", "out_of_range"),
        ({"props": "lantern"}, "props", "invalid_type"),
        ({"props": ["lantern", 3]}, "props[1]", "invalid_type"),
        ({"props": ["x"] * 9}, "props", "slot_overflow"),
        ({"pose": ""}, "pose", "invalid_type"),
        ({"scene_notes": "x" * 301}, "scene_notes", "too_long"),
        ({"scene_notes": "warm light\u202eevil"}, "scene_notes", "invalid_characters"),
        ({"scene_notes": "line\x00break"}, "scene_notes", "invalid_characters"),
        ({"locale": "fr"}, "locale", "invalid_choice"),
        ({"colour": "red"}, "colour", "unknown_field"),
    ],
)
def test_shape_problems(
    engine: PromptEngine, params: dict[str, Any], field: str, code: str
) -> None:
    problems = by_field(rejected(engine, {"pack": "lumen-fox", **params}))
    assert problems[field].code.value == code


def test_locale_problem_lists_the_choices(engine: PromptEngine) -> None:
    problem = by_field(rejected(engine, {"locale": "fr"}))["locale"]
    assert set(problem.allowed) == {"pt-BR", "en"}


def test_misspelt_field_gets_a_suggestion(engine: PromptEngine) -> None:
    problem = by_field(rejected(engine, {"pack": "lumen-fox", "poze": "open-arms"}))["poze"]
    assert problem.suggestion == "pose"
    assert "pose" in problem.allowed


def test_non_object_body_is_rejected(engine: PromptEngine) -> None:
    problems = rejected(engine, ["pose"])
    assert [p.code.value for p in problems] == ["invalid_type"]


@pytest.mark.parametrize(
    ("params", "field", "code", "suggestion"),
    [
        ({"pose": "open-arm"}, "pose", "unknown_option", "open-arms"),
        ({"outfit": "rain-cap"}, "outfit", "unknown_option", "rain-cape"),
        ({"footwear": "bots"}, "footwear", "unknown_option", "boots"),
        ({"props": ["lanter"]}, "props[0]", "unknown_option", "lantern"),
        ({"frame": "night-walk/arival"}, "frame", "unknown_frame", "night-walk/arrival"),
        ({"pack": "lumen-foxx"}, "pack", "unknown_pack", "lumen-fox"),
    ],
)
def test_unknown_ids_get_did_you_mean(
    engine: PromptEngine, params: dict[str, Any], field: str, code: str, suggestion: str
) -> None:
    problem = by_field(rejected(engine, {"pack": "lumen-fox", **params}))[field]
    assert problem.code.value == code
    assert problem.suggestion == suggestion
    assert problem.allowed


def test_unknown_provider(engine: PromptEngine) -> None:
    problem = by_field(rejected(engine, {"pack": "lumen-fox"}, dialect="stabilty"))["provider"]
    assert problem.code.value == "unknown_provider"
    assert problem.suggestion == "stability"
    assert "comfyui" in problem.allowed


def test_aspect_ratio_outside_the_pack(engine: PromptEngine) -> None:
    problem = by_field(rejected(engine, {"pack": "lumen-fox", "aspect_ratio": "21:9"}))[
        "aspect_ratio"
    ]
    assert problem.code.value == "unsupported_aspect_ratio"
    assert problem.allowed == ("1:1", "4:5", "9:16", "3:4")


def test_problems_from_every_stage_are_collected(engine: PromptEngine) -> None:
    problems = rejected(
        engine,
        {"pack": "lumen-fox", "seed": "x", "pose": "nope", "aspect_ratio": "2:1", "extra": 1},
        dialect="nope",
    )
    assert {p.field for p in problems} == {"seed", "pose", "aspect_ratio", "extra", "provider"}


def test_scene_notes_are_normalised(engine: PromptEngine) -> None:
    _, resolved = engine.resolve({"pack": "lumen-fox", "scene_notes": "  soft\n\tsnow   falling "})
    assert resolved.scene_notes == "soft snow falling"


def test_bare_frame_id_resolves_when_unique(engine: PromptEngine) -> None:
    _, resolved = engine.resolve({"pack": "lumen-fox", "frame": "departure"})
    assert resolved.frame == "night-walk/departure"


def test_params_hash_is_canonical(engine: PromptEngine) -> None:
    base = {"pack": "lumen-fox", "pose": "open-arms", "seed": 5}
    _, a = engine.resolve({**base, "props": ["compass", "lantern"], "locale": "en"})
    _, b = engine.resolve({**base, "props": ["lantern", "compass"], "locale": "pt-BR"})
    _, c = engine.resolve({**base, "props": ["lantern"]})
    assert a.props == b.props == ("lantern", "compass")  # catalog order
    assert a.params_hash == b.params_hash  # prop order and locale do not matter
    assert a.params_hash != c.params_hash
    assert len(a.params_hash) == 64


def test_params_hash_is_stable_across_runs(engine: PromptEngine) -> None:
    # Pinned: a change here means every cache key and stored hash changes, which needs a migration.
    _, resolved = engine.resolve({"pack": "lumen-fox", "pose": "open-arms", "seed": 5})
    assert resolved.canonical() == {
        "pack": "lumen-fox",
        "pose": "open-arms",
        "outfit": "explorer-coat",
        "footwear": "boots",
        "props": [],
        "frame": None,
        "aspect_ratio": "1:1",
        "seed": 5,
        "scene_notes": None,
    }
    canonical_json = (
        '{"aspect_ratio":"1:1","footwear":"boots","frame":null,"outfit":"explorer-coat",'
        '"pack":"lumen-fox","pose":"open-arms","props":[],"scene_notes":null,"seed":5}'
    )
    assert resolved.params_hash == hashlib.sha256(canonical_json.encode()).hexdigest()
