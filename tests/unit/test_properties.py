"""Property tests over the shipped pack's whole catalog.

An independent oracle states the rules as set logic; for every generated selection the engine
must agree with it exactly: valid selections compile for every dialect, deterministically and
within each provider's limits; invalid ones are rejected with exactly the oracle's codes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caverna.brand.pack import BrandPack
from caverna.brand.registry import PackRegistry
from caverna.domain.problems import InvalidParametersError
from caverna.prompting.dialects.registry import DIALECTS
from caverna.prompting.engine import PromptEngine
from caverna.prompting.params import MAX_SEED

REGISTRY = PackRegistry()
ENGINE = PromptEngine(REGISTRY)
PACK: BrandPack = REGISTRY.get("capitao-caverna")


def oracle(pack: BrandPack, sel: dict[str, Any]) -> set[str]:
    """The rules of the pack format, written independently of the engine."""
    codes: set[str] = set()
    props: list[str] = sel["props"]
    unique = set(props)
    if len(props) > pack.model.catalog.max_props:
        codes.add("slot_overflow")
    if len(unique) != len(props):
        codes.add("duplicate_option")
    pose = pack.poses[sel["pose"]]
    if sum(pack.props[p].hands for p in unique) > pose.free_hands:
        codes.add("hands_overloaded")
    chosen = {f"pose:{sel['pose']}", f"outfit:{sel['outfit']}", f"footwear:{sel['footwear']}"}
    chosen |= {f"prop:{p}" for p in unique}
    options = {
        ref: pack.options(ref.split(":")[0]).get(ref.split(":")[1])  # type: ignore[arg-type]
        for ref in chosen
    }
    for ref, option in options.items():
        assert option is not None
        if set(option.excludes) & (chosen - {ref}):
            codes.add("incompatible_options")
        if not set(option.requires) <= chosen:
            codes.add("missing_required_option")
        if option.only_in_frames and sel["frame"] not in option.only_in_frames:
            codes.add("not_allowed_in_frame")
    if sel["frame"] is not None:
        frame = pack.frames[sel["frame"]].frame
        if not set(frame.required) <= chosen:
            codes.add("required_by_frame")
        if set(frame.forbidden) & chosen:
            codes.add("forbidden_by_frame")
    return codes


selections = st.fixed_dictionaries(
    {
        "pack": st.just(PACK.id),
        "pose": st.sampled_from(list(PACK.poses)),
        "outfit": st.sampled_from(list(PACK.outfits)),
        "footwear": st.sampled_from(list(PACK.footwear)),
        "props": st.lists(st.sampled_from(list(PACK.props)), max_size=3),
        "frame": st.none() | st.sampled_from(list(PACK.frames)),
        "aspect_ratio": st.sampled_from(PACK.model.foundation.technical.aspect_ratios),
        "seed": st.none() | st.integers(min_value=0, max_value=MAX_SEED),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sel=selections)
def test_engine_agrees_with_the_oracle(sel: dict[str, Any]) -> None:
    expected = oracle(PACK, sel)
    if expected:
        for dialect in DIALECTS:
            with pytest.raises(InvalidParametersError) as caught:
                ENGINE.compile(sel, dialect)
            assert set(caught.value.codes) == expected
        return
    for dialect, spec in DIALECTS.items():
        first = ENGINE.compile(sel, dialect)
        again = ENGINE.compile(dict(reversed(list(sel.items()))), dialect)
        assert first.to_json() == again.to_json()
        if spec.max_prompt_chars is not None:
            assert len(first.prompt) <= spec.max_prompt_chars
        if spec.max_negative_chars is not None:
            assert len(first.negative_prompt or "") <= spec.max_negative_chars
        assert json.loads(json.dumps(first.payload)) == first.payload
        for mark in PACK.model.foundation.character.must_never_change:
            assert mark.term in first.prompt


@settings(max_examples=150, deadline=None)
@given(
    field=st.sampled_from(["pose", "outfit", "footwear"]),
    value=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=30),
)
def test_unknown_ids_are_rejected_with_their_field(field: str, value: str) -> None:
    known = list(PACK.options("footwear" if field == "footwear" else field))  # type: ignore[arg-type]
    if value in known:
        return
    with pytest.raises(InvalidParametersError) as caught:
        ENGINE.compile({"pack": PACK.id, field: value}, "preview")
    assert [(p.code.value, p.field) for p in caught.value.problems] == [("unknown_option", field)]


@settings(max_examples=100, deadline=None)
@given(notes=st.text(max_size=300))
def test_any_scene_notes_compile_or_fail_cleanly(notes: str) -> None:
    params = {"pack": PACK.id, "frame": "onboarding/first-focus-session", "scene_notes": notes}
    for dialect in DIALECTS:
        problems = ENGINE.check(params, dialect)
        assert {p.code.value for p in problems} <= {"invalid_characters"}
        if problems:
            continue
        compiled = ENGINE.compile(params, dialect)
        if dialect == "midjourney":
            assert compiled.prompt.count(" --ar ") == 1
            assert "::" not in compiled.prompt
