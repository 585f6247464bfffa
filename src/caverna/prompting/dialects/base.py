"""What every dialect compiler shares: the compiled result type and small pure helpers."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from caverna.brand.pack import BrandPack
from caverna.prompting.params import MAX_SEED
from caverna.prompting.spec import PromptSpec, SectionKey


@dataclass(frozen=True, slots=True)
class CompiledPrompt:
    """One provider's view of one image request, ready to send; stable byte for byte."""

    dialect: str
    pack: str
    pack_version: str
    template_version: str
    params_hash: str
    params: dict[str, Any]
    prompt: str
    negative_prompt: str | None
    payload: dict[str, Any]
    seed: int | None
    warnings: tuple[str, ...] = field(default=())
    variant: str | None = None  # the pack's A/B variant, recorded with the image

    def to_dict(self) -> dict[str, Any]:
        # "variant" only when there is one: prompts of packs without variants stay byte-identical
        extra = {} if self.variant is None else {"variant": self.variant}
        return {
            "dialect": self.dialect,
            "pack": self.pack,
            "pack_version": self.pack_version,
            "template_version": self.template_version,
            "params_hash": self.params_hash,
            "params": self.params,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "payload": self.payload,
            "warnings": list(self.warnings),
            **extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompiledPrompt:
        return cls(
            dialect=data["dialect"],
            pack=data["pack"],
            pack_version=data["pack_version"],
            template_version=data["template_version"],
            params_hash=data["params_hash"],
            params=data["params"],
            prompt=data["prompt"],
            negative_prompt=data["negative_prompt"],
            payload=data["payload"],
            seed=data["seed"],
            warnings=tuple(data["warnings"]),
            variant=data.get("variant"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, indent=2)


@dataclass(frozen=True, slots=True)
class Dialect:
    """A compiler and the provider limits it must respect (None: the provider sets none)."""

    name: str
    title: str
    compile: Callable[[PromptSpec], CompiledPrompt]
    max_prompt_chars: int | None
    max_negative_chars: int | None = None


def compiled(
    spec: PromptSpec,
    dialect: str,
    *,
    prompt: str,
    negative_prompt: str | None,
    payload: dict[str, Any],
    seed: int | None,
    warnings: list[str] | None = None,
) -> CompiledPrompt:
    return CompiledPrompt(
        dialect=dialect,
        pack=spec.pack.id,
        pack_version=spec.pack.version,
        template_version=spec.template_version,
        params_hash=spec.params_hash,
        params=spec.canonical_params,
        prompt=prompt,
        negative_prompt=negative_prompt,
        payload=payload,
        seed=seed,
        warnings=tuple(warnings or ()),
        variant=spec.variant,
    )


def ratio(aspect_ratio: str) -> tuple[int, int]:
    width, height = aspect_ratio.split(":")
    return int(width), int(height)


def dimensions(aspect_ratio: str, megapixels: float, multiple: int) -> tuple[int, int]:
    """Width and height near `megapixels` (1 MP = 1024x1024), each a multiple of `multiple`."""
    w_part, h_part = ratio(aspect_ratio)
    area = megapixels * 1024 * 1024
    width = math.sqrt(area * w_part / h_part)
    height = math.sqrt(area * h_part / w_part)
    return _snap(width, multiple), _snap(height, multiple)


def _snap(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def derived_seed(params_hash: str) -> int:
    """A seed taken from the parameters, for providers that cannot leave it to chance."""
    return int(params_hash[:12], 16) % (MAX_SEED + 1)


def phrases(
    spec: PromptSpec, order: tuple[SectionKey, ...], notes: Callable[[str], str]
) -> list[str]:
    """Comma-style fragments of the sections in `order`; user notes pass through `notes`."""
    out: list[str] = []
    for section in spec.ordered(order):
        if section.key is SectionKey.NOTES:
            out.extend(notes(f) for f in section.phrases())
        elif section.sentences:
            out.append(section.joined())
    return out


_SD_SPECIAL = re.compile(r"([()\[\]\\])")


def escape_sd(text: str) -> str:
    """Make free text literal for A1111/ComfyUI: brackets would otherwise become weights."""
    return _SD_SPECIAL.sub(r"\\\1", text)


def strip_weight_syntax(text: str) -> str:
    """For dialects with no escape sequence: drop the characters that mean weights."""
    return " ".join(re.sub(r"[()\[\]{}<>|\\]", " ", text).split())


@lru_cache(maxsize=64)
def _weighted(pack: BrandPack) -> str:
    traits = pack.model.foundation.character.must_never_change
    return ", ".join(f"({trait.term}:{trait.weight:g})" for trait in traits)


def weighted_terms(spec: PromptSpec) -> str:
    """The must-keep traits with attention weights, as one comma-joined run."""
    return _weighted(spec.pack)


SD_ORDER: tuple[SectionKey, ...] = (
    SectionKey.SUBJECT,
    SectionKey.SIGNATURE,
    SectionKey.POSE,
    SectionKey.OUTFIT,
    SectionKey.FOOTWEAR,
    SectionKey.PROPS,
    SectionKey.SCENE,
    SectionKey.BODY,
    SectionKey.COMPOSITION,
    SectionKey.ENVIRONMENT,
    SectionKey.LIGHTING,
    SectionKey.CONTINUITY,
    SectionKey.NOTES,
    SectionKey.STYLE,
    SectionKey.SAFEGUARDS,
)


def sd_prompt(spec: PromptSpec) -> str:
    """Weighted must-keep traits first (attention falls off along the prompt), then the rest."""
    return ", ".join([weighted_terms(spec), *phrases(spec, SD_ORDER, escape_sd)])
