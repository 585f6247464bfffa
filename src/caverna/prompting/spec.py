"""PromptSpec: the provider-neutral description of one image, as ordered sections.

Builders produce it from a pack and resolved parameters; each dialect renders it. Keeping this
intermediate form explicit is what lets one brand bible speak five providers' languages without
any of them drifting from the others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from caverna.brand.pack import BrandPack, FrameEntry
from caverna.brand.schema import WeightedTrait
from caverna.prompting.params import ResolvedParams

# Bump when any compiler's output changes for the same pack and parameters: it is part of
# template_version, so caches and stored images can tell old prompts from new ones.
ENGINE_VERSION = "1"


class SectionKey(StrEnum):
    SUBJECT = "subject"
    SIGNATURE = "signature"
    BODY = "body"
    POSE = "pose"
    OUTFIT = "outfit"
    FOOTWEAR = "footwear"
    PROPS = "props"
    SCENE = "scene"
    COMPOSITION = "composition"
    ENVIRONMENT = "environment"
    LIGHTING = "lighting"
    CONTINUITY = "continuity"
    STYLE = "style"
    NOTES = "notes"
    SAFEGUARDS = "safeguards"


@dataclass(frozen=True, slots=True)
class Section:
    """One part of a prompt; both renderings are computed once, as sections are reused."""

    key: SectionKey
    label: str
    sentences: tuple[str, ...]
    _prose: str = field(init=False, repr=False, compare=False)
    _phrases: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _joined: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        phrases = tuple(p for p in (s.rstrip(". ") for s in self.sentences) if p)
        object.__setattr__(self, "_prose", " ".join(sentence_case(s) for s in self.sentences))
        object.__setattr__(self, "_phrases", phrases)
        object.__setattr__(self, "_joined", ", ".join(phrases))

    def prose(self) -> str:
        """Sentences, each ending with a full stop."""
        return self._prose

    def phrases(self) -> tuple[str, ...]:
        """Comma-friendly fragments without final full stops."""
        return self._phrases

    def joined(self) -> str:
        """The fragments joined with commas."""
        return self._joined


@dataclass(frozen=True, slots=True)
class PromptSpec:
    pack: BrandPack
    params: ResolvedParams
    canonical_params: dict[str, Any]
    params_hash: str
    template_version: str
    frame: FrameEntry | None
    sections: tuple[Section, ...]
    must_keep: tuple[WeightedTrait, ...]
    negative: tuple[str, ...]
    variant: str | None = None  # the A/B variant compiled, when the pack declares variants

    def section(self, key: SectionKey) -> Section | None:
        return next((s for s in self.sections if s.key == key), None)

    def ordered(self, order: tuple[SectionKey, ...]) -> list[Section]:
        by_key = {s.key: s for s in self.sections}
        return [by_key[key] for key in order if key in by_key]


def sentence_case(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


@lru_cache(maxsize=64)
def template_version(pack: BrandPack) -> str:
    """Engine version plus a digest of the pack's content: any edit gives a new version."""
    digest = hashlib.sha256(f"{ENGINE_VERSION}:{pack.content_hash}".encode()).hexdigest()
    return f"e{ENGINE_VERSION}-{digest[:16]}"
