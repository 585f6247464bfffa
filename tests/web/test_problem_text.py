"""Problems in pt-BR: every code the engine can emit has Portuguese text with its details.

The codes are read from the engine's own source (every `ProblemCode.X` it names), so a new rule
or check without a translation fails here. The messages are real ones, produced by the engine
from the default pack, so a reworded English message that no longer parses fails here too.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from caverna.brand import rules
from caverna.brand.pack import BrandPack
from caverna.brand.registry import DEFAULT_PACK_ID, PackRegistry
from caverna.domain.problems import InvalidParametersError, Problem, ProblemCode
from caverna.prompting.engine import PromptEngine, length_problems
from caverna.services import generation, safety
from caverna.web import catalog_view, problem_text
from caverna.web.session import LOCALE_COOKIE
from tests.web.conftest import Studio

# What the studio runs when it validates and submits: the prompt engine with the pack rules and
# loader it calls, and the two services the generate form goes through before the queue.
ENGINE_PACKAGES = ("caverna.prompting", "caverna.brand")
ENGINE_MODULES: tuple[ModuleType, ...] = (safety, generation)


def _modules() -> Iterator[ModuleType]:
    for name in ENGINE_PACKAGES:
        package = importlib.import_module(name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            yield importlib.import_module(info.name)
    yield from ENGINE_MODULES


def codes_in(module: ModuleType) -> set[str]:
    """Every `ProblemCode.NAME` the module's source names."""
    source = Path(str(module.__file__)).read_text(encoding="utf-8")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "ProblemCode"
        ):
            found.add(ProblemCode[node.attr].value)
    return found


def engine_codes() -> set[str]:
    return set().union(*(codes_in(module) for module in _modules()))


def test_every_code_the_engine_can_emit_has_portuguese_text() -> None:
    codes = engine_codes()
    # the scan reads real source: the rule codes and the parameter codes are all there
    assert {"hands_overloaded", "forbidden_by_frame", "invalid_type", "unknown_pack"} <= codes
    missing = sorted(codes - problem_text.translated_codes())
    assert not missing, f"codes without pt-BR text in caverna.web.problem_text: {missing}"
    # ... and no entry of the catalogue is for a code that does not exist
    assert set(problem_text.CATALOGUE) <= {code.value for code in ProblemCode}
    assert set(problem_text.GENERAL) <= {code.value for code in ProblemCode}


# -- real messages, as the engine writes them ----------------------------------------------------


@dataclass(frozen=True)
class Sample:
    problem: Problem
    expected: tuple[str, ...]  # words the Portuguese sentence must carry (labels, numbers)


def pack() -> BrandPack:
    return PackRegistry([]).get(DEFAULT_PACK_ID)


def pt(kind: str, option_id: str) -> str:
    return str(pack().options(kind).get(option_id).labels.pt_br)  # type: ignore[arg-type, union-attr]


def frame_pt(ref: str) -> str:
    return str(pack().frames[ref].frame.title.pt_br)


def check(raw: Any, dialect: str = "openai") -> list[Problem]:
    return PromptEngine(PackRegistry([])).check(raw, dialect)


def one(problems: list[Problem], code: ProblemCode) -> Problem:
    found = [problem for problem in problems if problem.code is code]
    assert found, f"no {code.value} in {problems}"
    return found[0]


def sequence_problems(sequence: str, shared: dict[str, Any]) -> list[Problem]:
    with pytest.raises(InvalidParametersError) as raised:
        PromptEngine(PackRegistry([])).compile_sequence(sequence, shared, "openai")
    return list(raised.value.problems)


@dataclass(frozen=True)
class TinyDialect:
    """Only what `length_problems` reads: limits small enough for any real prompt."""

    title: str = "Tiny"
    max_prompt_chars: int = 10
    max_negative_chars: int = 10


def too_long() -> list[Problem]:
    compiled = PromptEngine(PackRegistry([])).compile({"seed": 1}, "openai")
    return length_problems(compiled, TinyDialect())  # type: ignore[arg-type]


def broken_frame_defaults() -> list[Problem]:
    """The default pack with one frame forbidding a prop its own defaults hold."""
    model = pack().model
    sequence = model.sequences[0]
    frames = list(sequence.frames)
    index = next(i for i, frame in enumerate(frames) if "wall-torch" in frame.defaults.props)
    frames[index] = frames[index].model_copy(update={"forbidden": ["prop:wall-torch"]})
    changed = model.model_copy(
        update={"sequences": [sequence.model_copy(update={"frames": frames}), *model.sequences[1:]]}
    )
    return rules.check_frame_defaults(BrandPack(changed, "test"))


def blocked() -> Problem:
    checker = safety.SafetyCheck(PackRegistry([]))
    term = pack().model.foundation.safety.blocked_terms[0]
    with pytest.raises(safety.ContentBlocked) as raised:
        asyncio.run(checker.check(DEFAULT_PACK_ID, {"scene_notes": f"a {term} scene"}))
    return raised.value.problems[0]


def samples() -> dict[str, list[Sample]]:
    code = ProblemCode
    every: dict[str, list[Sample]] = {}

    def add(problem: Problem, *expected: str) -> None:
        every.setdefault(problem.code.value, []).append(Sample(problem, expected))

    add(
        one(check({"pose": "arms-crossed", "props": ["torch"]}), code.HANDS_OVERLOADED),
        pt("pose", "arms-crossed"),
        pt("prop", "torch"),
        "0 mãos livres",
        "precisa de 1 mão.",
    )
    add(
        one(check({"pose": "seated-focus", "props": ["smartphone"]}), code.INCOMPATIBLE_OPTIONS),
        pt("pose", "seated-focus"),
        pt("prop", "smartphone"),
    )
    add(
        one(check({"pose": "lighting-the-torch", "props": []}), code.MISSING_REQUIRED_OPTION),
        pt("pose", "lighting-the-torch"),
        pt("prop", "torch"),
    )
    add(
        one(check({"props": ["ember-bowl"]}), code.NOT_ALLOWED_IN_FRAME),
        pt("prop", "ember-bowl"),
        frame_pt("onboarding/lighting-the-torch"),
        "sem quadro",
    )
    add(
        one(
            check({"frame": "onboarding/training", "props": ["ember-bowl"]}),
            code.NOT_ALLOWED_IN_FRAME,
        ),
        frame_pt("onboarding/training"),
    )
    add(
        one(check({"frame": "onboarding/lighting-the-torch", "props": []}), code.REQUIRED_BY_FRAME),
        frame_pt("onboarding/lighting-the-torch"),
        pt("prop", "torch"),
    )
    add(
        one(
            check({"frame": "onboarding/the-invitation", "props": ["torch"]}),
            code.FORBIDDEN_BY_FRAME,
        ),
        frame_pt("onboarding/the-invitation"),
        pt("prop", "torch"),
    )
    add(one(check({"props": ["torch", "hourglass", "chisel"]}), code.SLOT_OVERFLOW), "2", "3")
    add(one(check({"props": ["torch"] * 9}), code.SLOT_OVERFLOW), "8", "2")
    add(one(check({"props": ["hourglass", "hourglass"]}), code.DUPLICATE_OPTION), "Ampulheta")
    add(one(check({"pose": "moonwalk"}), code.UNKNOWN_OPTION), "moonwalk", "pose")
    add(one(check({"frame": "onboarding/nope"}), code.UNKNOWN_FRAME), "onboarding/nope")
    add(one(check({"aspect_ratio": "7:3"}), code.UNSUPPORTED_ASPECT_RATIO), "7:3")
    add(one(check({"colour": "red"}), code.UNKNOWN_FIELD), "colour")
    add(one(check({"seed": -1}), code.OUT_OF_RANGE), "maior ou igual a 0")
    add(one(check({"seed": 2**40}), code.OUT_OF_RANGE), "menor ou igual a 4294967294")
    add(one(check({"seed": "12"}), code.INVALID_TYPE), "número inteiro")
    add(one(check({"pose": ""}), code.INVALID_TYPE), "pelo menos 1 caractere.")
    add(one(check(["not", "an", "object"]), code.INVALID_TYPE), "objeto")
    add(one(check({"locale": "fr"}), code.INVALID_CHOICE), "“pt-BR” ou “en”")
    add(one(check({"scene_notes": "x" * 400}), code.TOO_LONG), "300")
    add(one(check({"scene_notes": "a\u200bb"}), code.INVALID_CHARACTERS), "U+200B")
    add(one(check({"pack": "no-such-pack"}), code.UNKNOWN_PACK), "no-such-pack")
    add(one(check({}, "dall-e"), code.UNKNOWN_PROVIDER), "dall-e")
    add(
        one(
            sequence_problems("onboarding", {"pose": "standing-ready"}),
            code.NOT_ALLOWED_IN_SEQUENCE,
        ),
        "“pose”",
    )
    add(one(sequence_problems("no-such-story", {}), code.UNKNOWN_SEQUENCE), "no-such-story")
    for problem in too_long():
        add(problem, "Tiny", "10")
    add(
        one(broken_frame_defaults(), code.PACK_REFERENCE),
        "padrões do quadro",
        pt("prop", "wall-torch"),
    )
    add(blocked(), "não é permitido")
    return every


# rejections of a broken pack on disk: their messages are the loader's and pydantic's own
# wording about files, shown with the code's general Portuguese sentence
PACK_FILE_CODES = {"pack_file_missing", "pack_yaml_syntax", "pack_schema", "pack_duplicate_id"}


def test_real_engine_messages_read_back_into_portuguese_with_their_details() -> None:
    every = samples()
    # every code the engine can emit is exercised (the pack-file ones need a broken pack file)
    assert engine_codes() - PACK_FILE_CODES <= set(every), sorted(
        engine_codes() - PACK_FILE_CODES - set(every)
    )
    the_pack = pack()
    for code, found in every.items():
        for sample in found:
            english = sample.problem.message
            text = problem_text.message(code, english, "pt-BR", the_pack)
            assert text != english, (code, english)
            assert text != problem_text.GENERAL[code], f"{code}: no shape reads {english!r}"
            for word in sample.expected:
                assert word in text, (code, word, text)
            # English stays exactly as the engine wrote it
            assert problem_text.message(code, english, "en", the_pack) == english


def test_a_message_in_an_unknown_shape_gets_the_general_sentence_and_allowed_values() -> None:
    odd = Problem(ProblemCode.INVALID_CHOICE, "sort", "sort must be fancy", allowed=("a", "b"))
    shown = problem_text.localize(odd, "pt-BR")
    assert shown["message"] == problem_text.GENERAL["invalid_choice"] + " Aceitos: a, b."
    assert shown["field_label"] == "Ordem"
    assert shown["code"] == "invalid_choice"  # the stable code is never translated
    # a code without any translation is shown as it came
    odd_code = {"code": "teapot", "field": "", "message": "short and stout"}
    assert problem_text.localize(odd_code, "pt-BR")["message"] == "short and stout"
    # the API's own refusals that pages show have their sentence
    quota = {"code": "quota_exceeded", "field": "", "message": "daily quota reached"}
    assert problem_text.localize(quota, "pt-BR")["message"].startswith("Sua cota")
    assert problem_text.field_label("props[1]", "pt-BR") == "Objetos (2º)"
    assert problem_text.field_label("props[1]", "en") == "Props (#2)"


def test_ruled_out_options_give_their_reason_in_the_visitors_language() -> None:
    engine = PromptEngine(PackRegistry([]))
    the_pack = pack()
    params = {"pose": "arms-crossed"}
    english = catalog_view.disabled_options(engine, the_pack, params, "openai", "en")
    portuguese = catalog_view.disabled_options(engine, the_pack, params, "openai", "pt-BR")
    assert set(english["prop"]) == set(portuguese["prop"])
    assert "arms-crossed" in english["prop"]["torch"]
    assert "hand" in english["prop"]["torch"]
    assert pt("pose", "arms-crossed") in portuguese["prop"]["torch"]
    assert "mão" in portuguese["prop"]["torch"]


async def test_live_validation_answers_in_portuguese_on_a_portuguese_page(studio: Studio) -> None:
    await studio.login()
    studio.client.cookies.set(LOCALE_COOKIE, "pt-BR")
    csrf = await studio.csrf()
    answer = await studio.client.post(
        "/web/check",
        json={"pose": "arms-crossed", "props": ["torch"], "seed": "-3"},
        headers={"x-csrf-token": csrf},
    )
    assert answer.status_code == 200
    body = answer.json()
    by_code = {problem["code"]: problem for problem in body["problems"]}
    hands = by_code["hands_overloaded"]
    assert hands["message"].startswith(f"A pose “{pt('pose', 'arms-crossed')}” deixa 0 mãos")
    assert hands["field_label"] == "Objetos"
    assert by_code["invalid_type"]["field_label"] == "Semente"
    reasons = [reason for kind in body["disabled"].values() for reason in kind.values()]
    assert reasons
    assert not [reason for reason in reasons if "hand(s)" in reason or "cannot be" in reason]
    # the same request on an English page keeps the engine's words
    studio.client.cookies.set(LOCALE_COOKIE, "en")
    english = await studio.client.post(
        "/web/check",
        json={"pose": "arms-crossed", "props": ["torch"]},
        headers={"x-csrf-token": csrf},
    )
    messages = [problem["message"] for problem in english.json()["problems"]]
    assert any("leaves 0 hand(s) free" in message for message in messages), messages


async def test_a_rejected_form_is_shown_again_with_portuguese_problems(studio: Studio) -> None:
    await studio.login()
    studio.client.cookies.set(LOCALE_COOKIE, "pt-BR")
    csrf = await studio.csrf()
    answer = await studio.client.post(
        "/generate",
        data={"csrf_token": csrf, "frame": "onboarding/the-invitation", "props": ["torch"]},
    )
    assert answer.status_code == 422
    title = frame_pt("onboarding/the-invitation")
    assert f"O quadro “{title}” não permite o objeto “{pt('prop', 'torch')}”" in answer.text
    assert "does not allow" not in answer.text
