"""Content safety: the blocklist's matching rules, the pack field, and the check's two layers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caverna.brand.loader import load_pack
from caverna.brand.registry import PackRegistry
from caverna.domain.problems import InvalidPackError, ProblemsError
from caverna.moderation_openai import parse_verdict
from caverna.prompting.params import PARAM_FIELDS
from caverna.prompting.spec import template_version
from caverna.services.safety import (
    FREE_TEXT_FIELDS,
    Blocklist,
    ContentBlocked,
    ModerationUnavailable,
    SafetyCheck,
    Verdict,
    fold,
    words,
)
from tests.conftest import FOX, PackEditor


def full_width(text: str) -> str:
    """ASCII letters as their full-width forms (U+FF21...), which NFKC folds back."""
    return "".join(chr(ord(ch) + 0xFEE0) for ch in text)


# --- folding and words --------------------------------------------------------------------------


def test_fold_removes_case_accents_and_compatibility_forms() -> None:
    assert fold("GÓRE") == "gore"
    assert fold(full_width("Gore")) == "gore"
    assert fold("Suicídio") == "suicidio"
    assert fold("STRAẞE") == "strasse"  # casefold, not lower
    assert fold("go\u00adre") == "gore"  # a soft hyphen cannot split a word


def test_words_split_on_anything_but_letters_and_digits() -> None:
    assert words("Blood--soaked,   blood_soaked!") == ("blood", "soaked", "blood", "soaked")
    assert words("  ") == ()


# --- matching -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a gore scene",
        "GORE",
        "Góre everywhere",
        full_width("gore"),
        "gore.",
        "(gore)",
        "lots of gore!!",
    ],
)
def test_a_blocked_word_matches_whatever_its_case_accents_or_width(text: str) -> None:
    assert Blocklist(["gore"]).find(text) == "gore"


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ("ass", "a classic class with a bass guitar and a passage"),
        ("ass", "assassin's creed style lighting"),
        ("sex", "Essex countryside, sextant on the desk"),
        ("gore", "Al Gorealis gored gorge"),
        ("nazi", "a nazir and a nazirite"),
        ("gun", "begun, gunnel and burgundy"),
        ("sword", "swordfish and crosswords"),
        ("severed head", "he severed the rope above his head"),
        ("white power", "white powder snow"),
    ],
)
def test_no_match_inside_other_words_or_across_other_words(term: str, text: str) -> None:
    assert Blocklist([term]).find(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "a blood-soaked floor",
        "a blood soaked floor",
        "a BLOOD   soaked floor",
        "a blood--soaked floor",
        "a blood / soaked floor",
        "a blood_soaked floor",
    ],
)
def test_a_phrase_matches_whatever_separates_its_words(text: str) -> None:
    assert Blocklist(["blood-soaked"]).find(text) == "blood-soaked"


@pytest.mark.parametrize(("term", "text"), [("cadáver", "um cadaver"), ("cadaver", "UM CADÁVER")])
def test_accents_are_ignored_on_both_sides(term: str, text: str) -> None:
    assert Blocklist([term]).find(text) == term


@pytest.mark.parametrize("text", ["g o r e", "g.o.r.e", "G-O-R-E", "g  o  r  e", "g_o_r_e"])
def test_letters_spelled_out_one_by_one_read_as_the_word(text: str) -> None:
    assert Blocklist(["gore"]).find(text) == "gore"


def test_three_spelled_out_letters_are_enough() -> None:
    assert Blocklist(["sex"]).find("s.e.x") == "sex"
    assert Blocklist(["ea"]).find("e a") is None


@pytest.mark.parametrize(
    "text",
    [
        "s exam",  # a lone letter does not join the word after it
        "g o r e d",  # spells "gored", not "gore"
        "o capitão e a tocha",  # Portuguese single-letter words stay words
    ],
)
def test_spelled_out_letters_do_not_make_words_that_are_not_there(text: str) -> None:
    assert Blocklist(["sex", "gore", "ea"]).find(text) is None


def test_the_pack_spelling_of_the_first_match_is_reported() -> None:
    blocklist = Blocklist(["Severed Head", "gore", "GORE"])
    assert blocklist.find("a SEVERED  head and gore") == "Severed Head"
    assert blocklist.find("just GÓRE") == "gore"


def test_empty_and_punctuation_only_terms_match_nothing() -> None:
    assert not Blocklist([])
    assert Blocklist(["--"]).find("-- anything --") is None


# --- the shipped pack ---------------------------------------------------------------------------

SHIPPED = PackRegistry().get("capitao-caverna")


def _own_prompt_texts() -> Iterator[str]:
    """Everything the pack itself says an image shows: a blocklist must never refuse it."""
    model = SHIPPED.model
    for option in SHIPPED.by_ref.values():
        yield option.prompt
    for sequence in model.sequences:
        for frame in sequence.frames:
            yield frame.prompt
            yield from frame.continuity


def test_the_shipped_pack_blocks_gore_nudity_hate_and_its_never_list() -> None:
    blocklist = Blocklist(SHIPPED.model.foundation.safety.blocked_terms)
    for text in (
        "blood-soaked cave",
        "Capitão nu e NUDEZ",
        "um banho de sangue",
        "a swastika on the wall",
        "holding a wooden club",
        "riding a DINOSAUR",
        "like Captain Caveman",
        "uma caveira",
    ):
        assert blocklist.find(text) is not None, text


def test_the_shipped_blocklist_accepts_the_packs_own_scenes() -> None:
    blocklist = Blocklist(SHIPPED.model.foundation.safety.blocked_terms)
    for text in _own_prompt_texts():
        assert blocklist.find(text) is None, text
    for text in (
        "a classic focus session, glass of water on the desk",
        "sangue frio, calm as always",
        "the captain kills distractions with a calm smile",
        "uma pelada de futebol no vale ao fundo",
    ):
        assert blocklist.find(text) is None, text


def test_the_safety_section_changes_no_prompt(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy
    before = load_pack(FOX)

    def add_safety(data: dict[str, Any]) -> None:
        data["safety"] = {"blocked_terms": ["gore", "blood-soaked"]}

    edit("foundation.yaml", add_safety)
    after = load_pack(folder)
    assert after.model.foundation.safety.blocked_terms == ["gore", "blood-soaked"]
    assert after.content_hash == before.content_hash
    assert template_version(after) == template_version(before)


@pytest.mark.parametrize(
    "safety",
    [{"blocked_terms": ["--"]}, {"blocked_terms": ["x"]}, {"blocked": ["gore"]}],
)
def test_a_bad_safety_section_is_a_schema_error(
    fox_copy: tuple[Path, PackEditor], safety: dict[str, Any]
) -> None:
    folder, edit = fox_copy

    def add_safety(data: dict[str, Any]) -> None:
        data["safety"] = safety

    edit("foundation.yaml", add_safety)
    with pytest.raises(InvalidPackError) as caught:
        load_pack(folder)
    (problem,) = caught.value.problems
    assert problem.code.value == "pack_schema"
    assert problem.file == "foundation.yaml"
    assert problem.field.startswith("safety.")


def test_free_text_fields_are_generation_parameters() -> None:
    assert set(FREE_TEXT_FIELDS) <= set(PARAM_FIELDS)


# --- the check ----------------------------------------------------------------------------------


class ScriptedModerator:
    """Answers with a verdict, or raises, and remembers what it was asked."""

    def __init__(self, verdict: Verdict | None = None) -> None:
        self.verdict = verdict or Verdict(flagged=False)
        self.seen: list[str] = []

    async def moderate(self, text: str) -> Verdict:
        self.seen.append(text)
        if self.verdict.categories == ("down",):
            raise ModerationUnavailable("down for the test")
        return self.verdict


DOWN = Verdict(flagged=False, categories=("down",))
PACK = "capitao-caverna"


async def test_a_blocked_term_is_refused_before_moderation_is_asked() -> None:
    moderator = ScriptedModerator()
    check = SafetyCheck(PackRegistry(), moderator)
    with pytest.raises(ContentBlocked) as caught:
        await check.check(PACK, {"scene_notes": "a pool of BLOOD on the floor"})
    blocked = caught.value
    assert (blocked.field, blocked.source) == ("scene_notes", "blocklist")
    assert "blood" in blocked.reason
    assert moderator.seen == []
    # a rejection of input like any other: a stable code on the field
    assert isinstance(blocked, ProblemsError)
    assert blocked.codes == ["content_blocked"]
    assert blocked.problems[0].field == "scene_notes"


async def test_a_flagged_text_is_refused_with_its_categories() -> None:
    moderator = ScriptedModerator(Verdict(flagged=True, categories=("harassment", "violence")))
    check = SafetyCheck(PackRegistry(), moderator)
    with pytest.raises(ContentBlocked) as caught:
        await check.check(PACK, {"scene_notes": "something the list does not know"})
    assert caught.value.source == "moderation"
    assert caught.value.reason == "flagged by content moderation: harassment, violence"
    assert moderator.seen == ["something the list does not know"]


async def test_clean_text_passes_both_layers() -> None:
    moderator = ScriptedModerator()
    check = SafetyCheck(PackRegistry(), moderator)
    await check.check(PACK, {"scene_notes": "a calm morning light"})
    assert moderator.seen == ["a calm morning light"]


async def test_empty_text_is_not_sent_for_moderation() -> None:
    moderator = ScriptedModerator()
    check = SafetyCheck(PackRegistry(), moderator)
    await check.check(PACK, {"scene_notes": "   "})
    await check.check_params({"pose": "standing-ready"})
    assert moderator.seen == []


async def test_moderation_that_cannot_answer_fails_closed_by_default() -> None:
    with pytest.raises(ModerationUnavailable):
        await SafetyCheck(PackRegistry(), ScriptedModerator(DOWN)).check(
            PACK, {"scene_notes": "a calm morning light"}
        )


async def test_moderation_that_cannot_answer_can_fail_open() -> None:
    check = SafetyCheck(PackRegistry(), ScriptedModerator(DOWN), fail_open=True)
    await check.check(PACK, {"scene_notes": "a calm morning light"})
    with pytest.raises(ContentBlocked):  # the blocklist still holds
        await check.check(PACK, {"scene_notes": "gore"})


async def test_the_blocklist_is_the_packs_own() -> None:
    check = SafetyCheck(PackRegistry([FOX]))
    await check.check("lumen-fox", {"scene_notes": "a wooden club"})  # no list in the fox pack
    await check.check("no-such-pack", {"scene_notes": "gore"})  # the engine refuses the pack
    with pytest.raises(ContentBlocked):
        await check.check_params({"scene_notes": "a wooden club"})  # the default pack


# --- the OpenAI answer --------------------------------------------------------------------------


def test_a_moderation_answer_gives_the_categories_marked_true() -> None:
    raw = (
        b'{"id": "modr-1", "model": "omni-moderation-latest", "results": [{"flagged": true,'
        b' "categories": {"violence": true, "hate": false, "harassment": true},'
        b' "category_scores": {"violence": 0.9}}]}'
    )
    assert parse_verdict(raw) == Verdict(True, ("harassment", "violence"))
    clean = b'{"results": [{"flagged": false, "categories": {"violence": false}}]}'
    assert parse_verdict(clean) == Verdict(False)


@pytest.mark.parametrize(
    "raw",
    [b"", b"<html>", b"{}", b'{"results": []}', b'{"results": [{"flagged": "yes"}]}'],
)
def test_an_unreadable_moderation_answer_is_no_verdict(raw: bytes) -> None:
    with pytest.raises(ModerationUnavailable):
        parse_verdict(raw)
