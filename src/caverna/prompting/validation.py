"""Turns raw request data into ResolvedParams, collecting every problem before giving up.

Order of work: shape (types, ranges, unknown keys) -> references into the pack (with
did-you-mean) -> combination rules. A field that failed its shape check is left out of the later
stages rather than stopping them, so one answer lists everything the user has to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from caverna.brand.pack import BrandPack, FrameEntry
from caverna.brand.rules import Selection, check_selection, check_slots
from caverna.brand.schema import OptionKind
from caverna.domain.problems import Problem, ProblemCode
from caverna.domain.suggest import closest
from caverna.prompting.params import (
    MAX_PROPS_ACCEPTED,
    PARAM_FIELDS,
    GenerationParams,
    ResolvedParams,
)

_RANGE_ERRORS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}
_LENGTH_ERRORS = {"string_too_long", "too_long", "string_too_short", "too_short"}


def parse_params(
    raw: Mapping[str, Any] | GenerationParams,
) -> tuple[GenerationParams, list[Problem]]:
    """Shape-check raw input; returns params built from the fields that passed, plus problems."""
    if isinstance(raw, GenerationParams):
        return raw, []
    if not isinstance(raw, Mapping):
        problem = Problem(ProblemCode.INVALID_TYPE, "(body)", "parameters must be an object")
        return GenerationParams(), [problem]
    try:
        return GenerationParams.model_validate(dict(raw)), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    problems = [_problem_from_error(error) for error in errors]
    failed = {str(error["loc"][0]) for error in errors if error["loc"]}
    survivors = {k: v for k, v in raw.items() if k in PARAM_FIELDS and k not in failed}
    return GenerationParams.model_validate(survivors), problems


def _problem_from_error(error: Any) -> Problem:
    location = tuple(error["loc"])
    field = _field_name(location)
    kind: str = error["type"]
    message: str = error["msg"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return Problem(
            ProblemCode.UNKNOWN_FIELD,
            field,
            f"'{field}' is not a parameter",
            allowed=PARAM_FIELDS,
            suggestion=closest(field, PARAM_FIELDS),
        )
    if kind in _RANGE_ERRORS:
        return Problem(ProblemCode.OUT_OF_RANGE, field, message)
    if kind == "too_long" and field == "props":
        return Problem(
            ProblemCode.SLOT_OVERFLOW,
            field,
            f"at most {MAX_PROPS_ACCEPTED} props are accepted, and at most 2 fit in one image",
        )
    if kind in _LENGTH_ERRORS:
        return Problem(
            ProblemCode.TOO_LONG if "long" in kind else ProblemCode.INVALID_TYPE, field, message
        )
    if kind == "invalid_characters":
        return Problem(ProblemCode.INVALID_CHARACTERS, field, message)
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        allowed = tuple(part.strip(" '\"") for part in expected.replace(" or ", ",").split(","))
        return Problem(
            ProblemCode.INVALID_CHOICE, field, message, allowed=tuple(a for a in allowed if a)
        )
    return Problem(ProblemCode.INVALID_TYPE, field, message)


def _field_name(location: tuple[Any, ...]) -> str:
    if not location:
        return "(body)"
    head, *rest = location
    name = str(head)
    for part in rest:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def resolve_params(
    pack: BrandPack, params: GenerationParams
) -> tuple[ResolvedParams | None, list[Problem]]:
    """Apply defaults (explicit > frame > pack) and check every reference and rule."""
    problems: list[Problem] = []

    entry: FrameEntry | None = None
    if params.frame is not None:
        entry = pack.resolve_frame(params.frame)
        if entry is None:
            problems.append(_unknown_frame(pack, params.frame))
    defaults = entry.frame.defaults if entry else None

    def pick(
        kind: OptionKind, field: str, value: str | None, frame_default: str | None
    ) -> str | None:
        chosen = value if value is not None else frame_default or pack.default_option(kind)
        if chosen not in pack.options(kind):
            problems.append(_unknown_option(pack, kind, field, chosen))
            return None
        return chosen

    pose = pick("pose", "pose", params.pose, defaults.pose if defaults else None)
    outfit = pick("outfit", "outfit", params.outfit, defaults.outfit if defaults else None)
    footwear = pick(
        "footwear", "footwear", params.footwear, defaults.footwear if defaults else None
    )

    raw_props = params.props if params.props is not None else (defaults.props if defaults else [])
    props: list[str] = []
    for position, prop in enumerate(raw_props):
        if prop in pack.props:
            props.append(prop)
        else:
            problems.append(_unknown_option(pack, "prop", f"props[{position}]", prop))

    technical = pack.model.foundation.technical
    aspect_ratio = params.aspect_ratio
    if aspect_ratio is None:
        aspect_ratio = (
            defaults.aspect_ratio if defaults else None
        ) or technical.default_aspect_ratio
    if aspect_ratio not in technical.aspect_ratios:
        problems.append(
            Problem(
                ProblemCode.UNSUPPORTED_ASPECT_RATIO,
                "aspect_ratio",
                f"aspect ratio '{aspect_ratio}' is not offered by pack '{pack.id}'",
                allowed=tuple(technical.aspect_ratios),
            )
        )

    frame_broken = params.frame is not None and entry is None
    unknown_prop = len(props) != len(raw_props)
    if pose and outfit and footwear and not frame_broken and not unknown_prop:
        selection = Selection(pose, outfit, footwear, tuple(props), entry)
        problems.extend(check_selection(pack, selection))
    else:
        problems.extend(check_slots(pack, tuple(raw_props)))

    if problems or pose is None or outfit is None or footwear is None:
        return None, problems
    order = {prop_id: index for index, prop_id in enumerate(pack.props)}
    return (
        ResolvedParams(
            pack=pack.id,
            pose=pose,
            outfit=outfit,
            footwear=footwear,
            props=tuple(sorted(props, key=order.__getitem__)),
            frame=entry.ref if entry else None,
            aspect_ratio=aspect_ratio,
            seed=params.seed,
            scene_notes=params.scene_notes or None,
            locale=params.locale,
        ),
        [],
    )


def _unknown_option(pack: BrandPack, kind: OptionKind, field: str, value: str) -> Problem:
    known = list(pack.options(kind))
    return Problem(
        ProblemCode.UNKNOWN_OPTION,
        field,
        f"no {kind} '{value}' in pack '{pack.id}'",
        allowed=tuple(known),
        suggestion=closest(value, known),
    )


def _unknown_frame(pack: BrandPack, value: str) -> Problem:
    known = list(pack.frames)
    bare = [entry.frame.id for entry in pack.frames.values()]
    return Problem(
        ProblemCode.UNKNOWN_FRAME,
        "frame",
        f"no frame '{value}' in pack '{pack.id}'",
        allowed=tuple(known),
        suggestion=closest(value, known) or closest(value, bare),
    )
