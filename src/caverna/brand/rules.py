"""Compatibility rules between catalog options and frames.

Pure functions over ids that are known to exist in the pack. They answer two questions with the
same code: "is this selection valid?" (validation) and "why is this option unavailable?" (the
studio greys out choices with the reason).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from caverna.brand.pack import BrandPack, FrameEntry
from caverna.brand.schema import CatalogOption, OptionKind
from caverna.domain.problems import Problem, ProblemCode


@dataclass(frozen=True, slots=True)
class Selection:
    """What a user picked, with ids already checked to exist."""

    pose: str
    outfit: str
    footwear: str
    props: tuple[str, ...]
    frame: FrameEntry | None
    _picked: tuple[tuple[str, OptionKind, str], ...] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        items: list[tuple[str, OptionKind, str]] = [
            ("pose", "pose", self.pose),
            ("outfit", "outfit", self.outfit),
            ("footwear", "footwear", self.footwear),
        ]
        items.extend((f"props[{i}]", "prop", prop) for i, prop in enumerate(self.props))
        object.__setattr__(self, "_picked", tuple(items))

    def picked(self) -> tuple[tuple[str, OptionKind, str], ...]:
        """(field, kind, id) for every chosen option, in a fixed order."""
        return self._picked

    def refs(self) -> set[str]:
        return {f"{kind}:{option_id}" for _, kind, option_id in self._picked}


def check_selection(pack: BrandPack, selection: Selection) -> list[Problem]:
    return [
        *check_slots(pack, selection.props),
        *_hands(pack, selection),
        *_excludes(pack, selection),
        *_requires(pack, selection),
        *_frame_rules(pack, selection),
    ]


def _option(pack: BrandPack, kind: OptionKind, option_id: str) -> CatalogOption:
    return pack.by_ref[f"{kind}:{option_id}"]


def check_slots(pack: BrandPack, props: tuple[str, ...]) -> list[Problem]:
    """Count and uniqueness of props; meaningful even when some prop ids are unknown."""
    return list(_slots(pack, props))


def _slots(pack: BrandPack, props: tuple[str, ...]) -> Iterator[Problem]:
    limit = pack.model.catalog.max_props
    if len(props) > limit:
        yield Problem(
            ProblemCode.SLOT_OVERFLOW,
            "props",
            f"at most {limit} props fit in one image; {len(props)} were chosen",
            allowed=(str(limit),),
        )
    seen: set[str] = set()
    for position, prop in enumerate(props):
        if prop in seen:
            yield Problem(
                ProblemCode.DUPLICATE_OPTION,
                f"props[{position}]",
                f"prop '{prop}' is chosen twice",
            )
        seen.add(prop)


def _hands(pack: BrandPack, selection: Selection) -> Iterator[Problem]:
    pose = pack.poses[selection.pose]
    needed = sum(pack.props[p].hands for p in dict.fromkeys(selection.props))
    if needed > pose.free_hands:
        held = [p for p in dict.fromkeys(selection.props) if pack.props[p].hands]
        fitting = sorted(prop.id for prop in pack.props.values() if prop.hands <= pose.free_hands)
        yield Problem(
            ProblemCode.HANDS_OVERLOADED,
            "props",
            f"pose '{pose.id}' leaves {pose.free_hands} hand(s) free but the props "
            f"{', '.join(held)} need {needed}",
            allowed=tuple(fitting),
        )


def _excludes(pack: BrandPack, selection: Selection) -> Iterator[Problem]:
    picked = [
        (name, kind, option_id, f"{kind}:{option_id}", _option(pack, kind, option_id))
        for name, kind, option_id in selection.picked()
    ]
    for i, (_, kind_a, id_a, ref_a, option_a) in enumerate(picked):
        for field_b, kind_b, id_b, ref_b, option_b in picked[i + 1 :]:
            if ref_b in option_a.excludes or ref_a in option_b.excludes:
                yield Problem(
                    ProblemCode.INCOMPATIBLE_OPTIONS,
                    field_b,
                    f"{kind_b} '{id_b}' cannot be combined with {kind_a} '{id_a}'",
                )


def _requires(pack: BrandPack, selection: Selection) -> Iterator[Problem]:
    chosen = selection.refs()
    for field, kind, option_id in selection.picked():
        for ref in _option(pack, kind, option_id).requires:
            if ref not in chosen:
                yield Problem(
                    ProblemCode.MISSING_REQUIRED_OPTION,
                    field,
                    f"{kind} '{option_id}' requires {ref.replace(':', ' ', 1)!r}",
                    allowed=(ref,),
                )


def _frame_rules(pack: BrandPack, selection: Selection) -> Iterator[Problem]:
    frame_ref = selection.frame.ref if selection.frame else None
    for field, option_kind, option_id in selection.picked():
        allowed_frames = _option(pack, option_kind, option_id).only_in_frames
        if allowed_frames and frame_ref not in allowed_frames:
            where = f"frame '{frame_ref}'" if frame_ref else "an image without a frame"
            yield Problem(
                ProblemCode.NOT_ALLOWED_IN_FRAME,
                field,
                f"{option_kind} '{option_id}' is only used in frames {', '.join(allowed_frames)}, "
                f"not in {where}",
                allowed=tuple(allowed_frames),
            )
    if selection.frame is None:
        return
    frame = selection.frame.frame
    chosen = selection.refs()
    for ref in frame.required:
        if ref not in chosen:
            kind = ref.partition(":")[0]
            yield Problem(
                ProblemCode.REQUIRED_BY_FRAME,
                "props" if kind == "prop" else kind,
                f"frame '{selection.frame.ref}' needs {ref.replace(':', ' ', 1)!r}",
                allowed=(ref,),
            )
    fields = {f"{kind}:{option_id}": field for field, kind, option_id in selection.picked()}
    for ref in frame.forbidden:
        if ref in chosen:
            yield Problem(
                ProblemCode.FORBIDDEN_BY_FRAME,
                fields[ref],
                f"frame '{selection.frame.ref}' does not allow {ref.replace(':', ' ', 1)!r}",
            )


def defaults_selection(pack: BrandPack, entry: FrameEntry) -> Selection:
    defaults = entry.frame.defaults
    return Selection(
        pose=defaults.pose,
        outfit=defaults.outfit,
        footwear=defaults.footwear,
        props=tuple(defaults.props),
        frame=entry,
    )


def check_frame_defaults(pack: BrandPack) -> list[Problem]:
    """A frame whose own defaults break the rules would fail every user who accepts them."""
    problems: list[Problem] = []
    for entry in pack.frames.values():
        for problem in check_selection(pack, defaults_selection(pack, entry)):
            problems.append(
                Problem(
                    ProblemCode.PACK_REFERENCE,
                    f"frames[{entry.frame.id}].defaults.{problem.field}",
                    f"the frame's defaults break a rule: {problem.message}",
                    problem.allowed,
                    file=f"sequences/{entry.sequence.id}.yaml",
                )
            )
    return problems
