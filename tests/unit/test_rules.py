"""Every combination rule, each proven with the small fox pack where it is declared once."""

from __future__ import annotations

from typing import Any

import pytest

from caverna.domain.problems import InvalidParametersError, ProblemCode
from caverna.prompting.engine import PromptEngine

FOX: dict[str, Any] = {"pack": "lumen-fox"}


def problems(engine: PromptEngine, **params: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidParametersError) as caught:
        engine.resolve({**FOX, **params})
    return [(p.code.value, p.field) for p in caught.value.problems]


def test_valid_selection_resolves_with_defaults(engine: PromptEngine) -> None:
    _, resolved = engine.resolve({**FOX, "pose": "open-arms", "props": ["lantern"]})
    assert resolved.pose == "open-arms"
    assert resolved.outfit == "explorer-coat"  # first outfit is the pack default
    assert resolved.props == ("lantern",)
    assert resolved.aspect_ratio == "1:1"
    assert resolved.frame is None


def test_more_props_than_slots_is_slot_overflow(engine: PromptEngine) -> None:
    found = problems(engine, pose="open-arms", props=["lantern", "compass", "scarf-pin"])
    assert ("slot_overflow", "props") in found


def test_same_prop_twice_is_duplicate(engine: PromptEngine) -> None:
    found = problems(engine, pose="open-arms", props=["lantern", "lantern"])
    assert found == [("duplicate_option", "props[1]")]


def test_props_needing_more_hands_than_the_pose_leaves(engine: PromptEngine) -> None:
    with pytest.raises(InvalidParametersError) as caught:
        engine.resolve({**FOX, "pose": "holding-high", "props": ["map-scroll"]})
    (problem,) = caught.value.problems
    assert problem.code is ProblemCode.HANDS_OVERLOADED
    assert problem.field == "props"
    assert "1 hand(s) free" in problem.message
    assert set(problem.allowed) == {"lantern", "compass", "scarf-pin"}


def test_worn_props_need_no_hands(engine: PromptEngine) -> None:
    _, resolved = engine.resolve(
        {**FOX, "pose": "arms-crossed", "frame": "arrival", "props": ["scarf-pin"]}
    )
    assert resolved.props == ("scarf-pin",)


@pytest.mark.parametrize(
    "params",
    [
        {"outfit": "rain-cape", "pose": "open-arms", "props": ["map-scroll"]},
        # declared on the outfit only, but it binds from the prop's side too
        {"pose": "open-arms", "props": ["map-scroll"], "outfit": "rain-cape"},
    ],
)
def test_excludes_are_symmetric(engine: PromptEngine, params: dict[str, Any]) -> None:
    found = problems(engine, **params)
    assert ("incompatible_options", "props[0]") in found


def test_requires_names_the_missing_option(engine: PromptEngine) -> None:
    with pytest.raises(InvalidParametersError) as caught:
        engine.resolve({**FOX, "outfit": "rain-cape", "props": ["compass"]})
    (problem,) = caught.value.problems
    assert problem.code is ProblemCode.MISSING_REQUIRED_OPTION
    assert problem.field == "props[0]"
    assert problem.allowed == ("outfit:explorer-coat",)


def test_frame_only_option_outside_its_frame(engine: PromptEngine) -> None:
    assert ("not_allowed_in_frame", "props[0]") in problems(engine, props=["scarf-pin"])
    found = problems(engine, frame="departure", props=["lantern", "scarf-pin"])
    assert ("not_allowed_in_frame", "props[1]") in found


def test_frame_required_option_missing(engine: PromptEngine) -> None:
    found = problems(engine, frame="departure", props=[])
    assert found == [("required_by_frame", "props")]


def test_frame_forbidden_option(engine: PromptEngine) -> None:
    found = problems(engine, frame="arrival", pose="holding-high", props=["scarf-pin"])
    assert found == [("forbidden_by_frame", "pose")]
    found = problems(engine, frame="departure", props=["lantern", "compass"])
    assert ("forbidden_by_frame", "props[1]") in found


def test_frame_defaults_fill_unset_fields_only(engine: PromptEngine) -> None:
    _, resolved = engine.resolve({**FOX, "frame": "arrival", "footwear": "barefoot"})
    assert resolved.frame == "night-walk/arrival"
    assert resolved.pose == "open-arms"
    assert resolved.footwear == "barefoot"
    assert resolved.props == ("scarf-pin",)
    assert resolved.aspect_ratio == "4:5"  # the frame's default beats the pack's


def test_every_problem_is_reported_at_once(engine: PromptEngine) -> None:
    found = problems(
        engine,
        frame="arrival",
        pose="holding-high",
        outfit="rain-cape",
        props=["map-scroll", "compass"],
    )
    codes = {code for code, _ in found}
    assert {
        "forbidden_by_frame",
        "hands_overloaded",
        "incompatible_options",
        "missing_required_option",
    } <= codes
