"""Prompt variants: deterministic, balanced assignment; the assigned text compiled and recorded."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from caverna.brand.registry import PackRegistry
from caverna.brand.schema import Foundation
from caverna.consistency.variants import VariantError, assign_variant, bucket
from caverna.prompting.dialects.base import CompiledPrompt
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.prompting.engine import PromptEngine
from caverna.services.prompt_cache import CachedCompiler, CacheStats, cache_key

PACKS = Path(__file__).resolve().parents[1] / "data" / "packs"
ENGINE = PromptEngine(PackRegistry([PACKS], include_builtin=False))
AB = ENGINE.packs.get("lumen-fox-ab")
B_TEXT = "Painterly storybook illustration with visible brush texture."


def random_params(rng: random.Random) -> dict[str, Any]:
    return {
        "pack": "lumen-fox-ab",
        "pose": rng.choice(["holding-high", "open-arms", "arms-crossed"]),
        "outfit": rng.choice(["explorer-coat", "rain-cape"]),
        "footwear": rng.choice(["boots", "barefoot"]),
        "props": [],
        "frame": None,
        "aspect_ratio": rng.choice(["1:1", "4:5"]),
        "scene_notes": rng.choice([None, f"note {rng.randrange(10**6)}"]),
    }


def test_assignment_is_deterministic_and_independent_of_key_order() -> None:
    params = {"pose": "open-arms", "outfit": "rain-cape", "seed": 7}
    choices = (("a", 1.0), ("b", 1.0))
    first = assign_variant(params, 7, choices, salt="style")
    assert all(assign_variant(params, 7, choices, salt="style") == first for _ in range(20))
    reordered = dict(reversed(list(params.items())))
    assert assign_variant(reordered, 7, choices, salt="style") == first
    assert 0.0 <= bucket(params, 7) < 1.0


def test_assignment_is_balanced_within_five_percent_over_ten_thousand_parameter_sets() -> None:
    rng = random.Random(20240611)
    counts: Counter[str] = Counter()
    for _ in range(10_000):
        seed = rng.randrange(2**32 - 1)
        counts[assign_variant(random_params(rng), seed, (("a", 1), ("b", 1)), salt="style")] += 1
    assert set(counts) == {"a", "b"}
    for share in (counts["a"] / 10_000, counts["b"] / 10_000):
        assert abs(share - 0.5) <= 0.05 * 0.5


def test_weights_set_the_shares() -> None:
    rng = random.Random(7)
    counts: Counter[str] = Counter()
    for _ in range(10_000):
        counts[assign_variant(random_params(rng), rng.randrange(10**9), (("a", 3), ("b", 1)))] += 1
    assert counts["a"] / 10_000 == pytest.approx(0.75, abs=0.0375)


def test_the_seed_changes_the_assignment() -> None:
    params = random_params(random.Random(1))
    seen = {assign_variant(params, seed, (("a", 1), ("b", 1))) for seed in range(64)}
    assert seen == {"a", "b"}


@pytest.mark.parametrize("bad", [(), (("a", 0.0),), (("a", 1.0), ("b", -2.0))])
def test_bad_variant_sets_are_rejected(bad: tuple[tuple[str, float], ...]) -> None:
    with pytest.raises(VariantError):
        assign_variant({}, 1, bad)


def compiled_for(variant: str, dialect: str = "openai") -> CompiledPrompt:
    """The first seed whose job the pack assigns to `variant` (bounded search)."""
    for seed in range(200):
        compiled = ENGINE.compile({"pack": "lumen-fox-ab", "seed": seed}, dialect)
        if compiled.variant == variant:
            return compiled
    raise AssertionError(f"no seed below 200 gets variant {variant}")


@pytest.mark.parametrize("dialect", DIALECT_NAMES)
def test_variant_b_compiles_its_section_text_and_a_keeps_the_foundation(dialect: str) -> None:
    b = compiled_for("b", dialect)
    a = compiled_for("a", dialect)
    assert "brush texture" in b.prompt
    assert "brush texture" not in a.prompt
    assert "soft stylized 3d illustration" in a.prompt.lower()
    assert "soft stylized 3d illustration" not in b.prompt.lower()
    assert b.to_dict()["variant"] == "b"
    assert CompiledPrompt.from_dict(b.to_dict()) == b


def test_same_request_same_variant_and_the_variant_is_in_the_spec() -> None:
    request = {"pack": "lumen-fox-ab", "pose": "open-arms", "seed": 12}
    first = ENGINE.compile(request, "sdwebui")
    again = ENGINE.compile(request, "sdwebui")
    assert first.variant == again.variant is not None
    assert ENGINE.spec(request).variant == first.variant
    assert first.params_hash == again.params_hash


def test_a_pack_without_variants_records_none_and_keeps_its_keys() -> None:
    compiled = ENGINE.compile({"pack": "lumen-fox", "seed": 3}, "openai")
    assert compiled.variant is None
    assert "variant" not in compiled.to_dict()
    assert ENGINE.packs.get("lumen-fox").model.foundation.variants is None
    assert "variants" not in ENGINE.packs.get("lumen-fox").model.foundation.model_dump()


def test_the_cache_key_carries_the_variant_only_when_present() -> None:
    plain = cache_key("hash", "e1-x", "openai")
    assert cache_key("hash", "e1-x", "openai", None) == plain
    assert cache_key("hash", "e1-x", "openai", "a") != plain
    assert cache_key("hash", "e1-x", "openai", "a") != cache_key("hash", "e1-x", "openai", "b")


def foundation_with(variants: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PACKS / "lumen-fox" / "foundation.yaml").read_text())
    data["variants"] = variants
    return data


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"section": "lighting", "options": [{"id": "a"}, {"id": "b"}]}, "section"),
        ({"section": "style", "options": [{"id": "a"}]}, "at least 2"),
        ({"section": "style", "options": [{"id": "a"}, {"id": "a"}]}, "repeated: a"),
        ({"section": "style", "options": [{"id": "a", "weight": 0}, {"id": "b"}]}, "weight"),
    ],
)
def test_bad_variant_declarations_are_rejected(variants: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Foundation.model_validate(foundation_with(variants))


def test_the_variant_pack_declares_an_even_split_on_style() -> None:
    declared = AB.model.foundation.variants
    assert declared is not None
    assert declared.section == "style"
    assert [(o.id, o.weight) for o in declared.options] == [("a", 1.0), ("b", 1.0)]
    assert B_TEXT.lower().rstrip(".") in " ".join(declared.options[1].sentences).lower()


class DictCache:
    """The smallest PromptCacheStore: a dict, no expiry."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    async def get(self, key: str, now: datetime) -> dict[str, Any] | None:
        return self.entries.get(key)

    async def put(
        self,
        key: str,
        dialect: str,
        template_version: str,
        compiled: dict[str, Any],
        now: datetime,
        ttl_seconds: float,
    ) -> None:
        self.entries[key] = compiled

    async def stats(self, now: datetime) -> CacheStats:
        return CacheStats(len(self.entries), 0, 0, 0, {})

    async def prune(self, now: datetime, *, everything: bool = False) -> int:
        return 0


async def test_the_prompt_cache_keys_and_returns_the_variant() -> None:
    store = DictCache()
    compiler = CachedCompiler(ENGINE, store, ttl_seconds=60)
    now = datetime.now(UTC)
    request = {"pack": "lumen-fox-ab", "seed": 5}
    first = await compiler.compile(request, "stability", now)
    (key,) = store.entries
    assert first.variant is not None
    assert key == cache_key(first.params_hash, first.template_version, "stability", first.variant)
    again = await compiler.compile(request, "stability", now)
    assert again == first
    assert len(store.entries) == 1
