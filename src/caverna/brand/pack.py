"""A loaded brand pack: the validated document plus the lookups every request needs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from caverna.brand.schema import (
    OPTION_KINDS,
    BrandPackModel,
    CatalogOption,
    Footwear,
    Frame,
    OptionKind,
    Outfit,
    Pose,
    Prop,
    Sequence,
)


@dataclass(frozen=True, slots=True)
class FrameEntry:
    """A frame with the place it holds in its sequence (continuity reads the one before)."""

    ref: str
    sequence: Sequence
    index: int
    frame: Frame

    @property
    def previous(self) -> Frame | None:
        return self.sequence.frames[self.index - 1] if self.index > 0 else None


_Option = TypeVar("_Option", bound=CatalogOption)


def _index(options: list[_Option]) -> Mapping[str, _Option]:
    return MappingProxyType({option.id: option for option in options})


@dataclass(frozen=True, eq=False)
class BrandPack:
    """Read-only view of a pack; built once at load time so requests only do dict lookups.

    Compared and hashed by identity: derived data (compiled sections, negatives) is memoised per
    loaded pack, and a reloaded pack is a new object with a new memo.
    """

    model: BrandPackModel
    source: str
    content_hash: str = field(init=False)
    poses: Mapping[str, Pose] = field(init=False)
    outfits: Mapping[str, Outfit] = field(init=False)
    footwear: Mapping[str, Footwear] = field(init=False)
    props: Mapping[str, Prop] = field(init=False)
    sequences: Mapping[str, Sequence] = field(init=False)
    frames: Mapping[str, FrameEntry] = field(init=False)
    by_ref: Mapping[str, CatalogOption] = field(init=False)

    def __post_init__(self) -> None:
        catalog = self.model.catalog
        put = object.__setattr__
        put(self, "content_hash", content_hash(self.model))
        put(self, "poses", _index(catalog.poses))
        put(self, "outfits", _index(catalog.outfits))
        put(self, "footwear", _index(catalog.footwear))
        put(self, "props", _index(catalog.props))
        put(self, "sequences", MappingProxyType({s.id: s for s in self.model.sequences}))
        frames: dict[str, FrameEntry] = {}
        for sequence in self.model.sequences:
            for position, frame in enumerate(sequence.frames):
                ref = f"{sequence.id}/{frame.id}"
                frames[ref] = FrameEntry(ref, sequence, position, frame)
        put(self, "frames", MappingProxyType(frames))
        refs: dict[str, CatalogOption] = {}
        for kind in OPTION_KINDS:
            refs.update({f"{kind}:{key}": option for key, option in self.options(kind).items()})
        put(self, "by_ref", MappingProxyType(refs))

    @property
    def id(self) -> str:
        return self.model.manifest.id

    @property
    def version(self) -> str:
        return self.model.manifest.pack_version

    def options(self, kind: OptionKind) -> Mapping[str, CatalogOption]:
        table: Mapping[str, CatalogOption]
        match kind:
            case "pose":
                table = self.poses
            case "outfit":
                table = self.outfits
            case "footwear":
                table = self.footwear
            case "prop":
                table = self.props
        return table

    def has_ref(self, ref: str) -> bool:
        return ref in self.by_ref

    def default_option(self, kind: OptionKind) -> str:
        """The first option of a kind is the pack-wide default when no frame names one."""
        return next(iter(self.options(kind)))

    def resolve_frame(self, name: str) -> FrameEntry | None:
        """Accept `sequence/frame`, or a bare frame id when it is unique across sequences."""
        if "/" in name:
            return self.frames.get(name)
        matches = [entry for entry in self.frames.values() if entry.frame.id == name]
        return matches[0] if len(matches) == 1 else None


# input policy that never reaches a model: editing it must not invalidate prompts or caches
_NOT_IN_PROMPTS: dict[str, Any] = {"foundation": {"safety"}}


def content_hash(model: BrandPackModel) -> str:
    """Hash of the pack's meaning, not its bytes: comments and key order do not change it."""
    canonical = json.dumps(
        model.model_dump(mode="json", by_alias=True, exclude=_NOT_IN_PROMPTS),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
