"""Generation parameters: what a user asks for, and its canonical, hashable resolved form."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from caverna.brand.registry import DEFAULT_PACK_ID
from caverna.brand.schema import Locale

MAX_SEED = 4_294_967_294  # the smallest upper bound among the providers' seed ranges
SCENE_NOTES_MAX = 300
MAX_PROPS_ACCEPTED = 8  # beyond the slot limit, but bounded so a hostile list stays cheap

_REJECTED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


def clean_text(value: str) -> str:
    """NFC, single spaces, no control or invisible format characters (they hide instructions).

    Whitespace controls (tab, newline) are allowed and folded into single spaces.
    """
    normalized = unicodedata.normalize("NFC", value)
    if normalized.isprintable():  # fast path: no control, format or separator characters
        return " ".join(normalized.split())
    bad = sorted(
        {
            f"U+{ord(ch):04X}"
            for ch in normalized
            if unicodedata.category(ch) in _REJECTED_CATEGORIES and not ch.isspace()
        }
    )
    if bad:
        raise PydanticCustomError(
            "invalid_characters",
            "control or invisible characters are not allowed: {characters}",
            {"characters": ", ".join(bad[:5])},
        )
    return " ".join(normalized.split())


OptionId = Annotated[str, Field(min_length=1, max_length=64)]
SceneNotes = Annotated[str, Field(max_length=SCENE_NOTES_MAX), AfterValidator(clean_text)]


class GenerationParams(BaseModel):
    """A request for one image. Unset options fall back to the frame's, then the pack's, defaults.

    Strict types: "12" is not a seed. Unknown keys are rejected so a misspelt field is never
    silently ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    pack: OptionId = DEFAULT_PACK_ID
    pose: OptionId | None = None
    outfit: OptionId | None = None
    footwear: OptionId | None = None
    props: list[OptionId] | None = Field(default=None, max_length=MAX_PROPS_ACCEPTED)
    frame: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    aspect_ratio: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    locale: Locale = "pt-BR"
    scene_notes: SceneNotes | None = None


PARAM_FIELDS: tuple[str, ...] = tuple(GenerationParams.model_fields)


@dataclass(frozen=True, slots=True)
class ResolvedParams:
    """Parameters after defaults, in canonical order: the input of every compiler.

    `locale` only changes what people read (labels), never what a model receives, so it is not
    part of the hash.
    """

    pack: str
    pose: str
    outfit: str
    footwear: str
    props: tuple[str, ...]
    frame: str | None
    aspect_ratio: str
    seed: int | None
    scene_notes: str | None
    locale: Locale

    def canonical(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "pose": self.pose,
            "outfit": self.outfit,
            "footwear": self.footwear,
            "props": list(self.props),
            "frame": self.frame,
            "aspect_ratio": self.aspect_ratio,
            "seed": self.seed,
            "scene_notes": self.scene_notes,
        }

    @property
    def params_hash(self) -> str:
        return stable_hash(self.canonical())


def stable_hash(data: Any) -> str:
    """sha256 of canonical JSON: the same on every run, machine and Python version."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
