"""Cross-reference checks of a pack: every id it names exists, and nothing is named twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from caverna.brand.schema import BrandPackModel, CatalogOption, Pose
from caverna.domain.problems import Problem, ProblemCode

CATALOG_FILE = "catalog.yaml"
FOUNDATION_FILE = "foundation.yaml"


def check_references(model: BrandPackModel, sequence_files: dict[str, str]) -> list[Problem]:
    return [
        *_duplicates(model, sequence_files),
        *_foundation(model),
        *_catalog(model),
        *_frames(model, sequence_files),
    ]


def _ids(model: BrandPackModel) -> dict[str, set[str]]:
    catalog = model.catalog
    return {
        "pose": {o.id for o in catalog.poses},
        "outfit": {o.id for o in catalog.outfits},
        "footwear": {o.id for o in catalog.footwear},
        "prop": {o.id for o in catalog.props},
    }


def _frame_refs(model: BrandPackModel) -> set[str]:
    return {f"{s.id}/{f.id}" for s in model.sequences for f in s.frames}


def _ref_exists(ref: str, ids: dict[str, set[str]]) -> bool:
    kind, _, option_id = ref.partition(":")
    return option_id in ids.get(kind, set())


def _duplicates(model: BrandPackModel, sequence_files: dict[str, str]) -> Iterator[Problem]:
    catalog = model.catalog
    lists: dict[str, list[CatalogOption]] = {
        "poses": list(catalog.poses),
        "outfits": list(catalog.outfits),
        "footwear": list(catalog.footwear),
        "props": list(catalog.props),
    }
    for name, options in lists.items():
        for option_id, count in Counter(o.id for o in options).items():
            if count > 1:
                yield Problem(
                    ProblemCode.PACK_DUPLICATE_ID,
                    f"{name}[{option_id}]",
                    f"id '{option_id}' is used by {count} {name}",
                    file=CATALOG_FILE,
                )
    for sequence_id, count in Counter(s.id for s in model.sequences).items():
        if count > 1:
            yield Problem(
                ProblemCode.PACK_DUPLICATE_ID,
                "id",
                f"sequence id '{sequence_id}' is used by {count} files",
                file=sequence_files.get(sequence_id),
            )
    for sequence in model.sequences:
        for frame_id, count in Counter(f.id for f in sequence.frames).items():
            if count > 1:
                yield Problem(
                    ProblemCode.PACK_DUPLICATE_ID,
                    f"frames[{frame_id}]",
                    f"frame id '{frame_id}' is used {count} times",
                    file=sequence_files.get(sequence.id),
                )
    palette = Counter(c.name for c in model.foundation.technical.palette)
    for color, count in palette.items():
        if count > 1:
            yield Problem(
                ProblemCode.PACK_DUPLICATE_ID,
                f"technical.palette[{color}]",
                f"colour '{color}' is defined {count} times",
                file=FOUNDATION_FILE,
            )


def _foundation(model: BrandPackModel) -> Iterator[Problem]:
    character = model.foundation.character
    technical = model.foundation.technical
    if character.default_expression not in character.expression_range:
        yield Problem(
            ProblemCode.PACK_REFERENCE,
            "character.default_expression",
            f"'{character.default_expression}' is not in character.expression_range",
            allowed=tuple(character.expression_range),
            file=FOUNDATION_FILE,
        )
    if technical.default_aspect_ratio not in technical.aspect_ratios:
        yield Problem(
            ProblemCode.PACK_REFERENCE,
            "technical.default_aspect_ratio",
            f"'{technical.default_aspect_ratio}' is not in technical.aspect_ratios",
            allowed=tuple(technical.aspect_ratios),
            file=FOUNDATION_FILE,
        )


def _catalog(model: BrandPackModel) -> Iterator[Problem]:
    ids = _ids(model)
    frames = _frame_refs(model)
    colors = {c.name for c in model.foundation.technical.palette}
    expressions = set(model.foundation.character.expression_range)
    catalog = model.catalog
    groups: tuple[tuple[str, str, list[CatalogOption]], ...] = (
        ("poses", "pose", list(catalog.poses)),
        ("outfits", "outfit", list(catalog.outfits)),
        ("footwear", "footwear", list(catalog.footwear)),
        ("props", "prop", list(catalog.props)),
    )
    for list_name, kind, options in groups:
        for option in options:
            where = f"{list_name}[{option.id}]"
            self_ref = f"{kind}:{option.id}"
            for field_name in ("excludes", "requires"):
                refs: list[str] = getattr(option, field_name)
                for position, ref in enumerate(refs):
                    if ref == self_ref:
                        yield Problem(
                            ProblemCode.PACK_REFERENCE,
                            f"{where}.{field_name}[{position}]",
                            "an option cannot name itself",
                            file=CATALOG_FILE,
                        )
                    elif not _ref_exists(ref, ids):
                        yield _unknown_ref(f"{where}.{field_name}[{position}]", ref, ids)
            for position, frame_ref in enumerate(option.only_in_frames):
                if frame_ref not in frames:
                    yield Problem(
                        ProblemCode.PACK_REFERENCE,
                        f"{where}.only_in_frames[{position}]",
                        f"frame '{frame_ref}' does not exist",
                        allowed=tuple(sorted(frames)),
                        file=CATALOG_FILE,
                    )
            if option.color is not None and option.color not in colors:
                yield Problem(
                    ProblemCode.PACK_REFERENCE,
                    f"{where}.color",
                    f"colour '{option.color}' is not in the palette",
                    allowed=tuple(sorted(colors)),
                    file=CATALOG_FILE,
                )
            expression = option.expression if isinstance(option, Pose) else None
            if expression is not None and expression not in expressions:
                yield Problem(
                    ProblemCode.PACK_REFERENCE,
                    f"{where}.expression",
                    f"'{expression}' is not in character.expression_range",
                    allowed=tuple(sorted(expressions)),
                    file=CATALOG_FILE,
                )


def _frames(model: BrandPackModel, sequence_files: dict[str, str]) -> Iterator[Problem]:
    ids = _ids(model)
    ratios = model.foundation.technical.aspect_ratios
    for sequence in model.sequences:
        file_name = sequence_files.get(sequence.id)
        for frame in sequence.frames:
            where = f"frames[{frame.id}]"
            defaults = frame.defaults
            chosen: list[tuple[str, str]] = [
                ("pose", defaults.pose),
                ("outfit", defaults.outfit),
                ("footwear", defaults.footwear),
                *(("prop", prop) for prop in defaults.props),
            ]
            for kind, option_id in chosen:
                if option_id not in ids[kind]:
                    field = "props" if kind == "prop" else kind
                    yield Problem(
                        ProblemCode.PACK_REFERENCE,
                        f"{where}.defaults.{field}",
                        f"{kind} '{option_id}' does not exist",
                        allowed=tuple(sorted(ids[kind])),
                        file=file_name,
                    )
            if defaults.aspect_ratio is not None and defaults.aspect_ratio not in ratios:
                yield Problem(
                    ProblemCode.PACK_REFERENCE,
                    f"{where}.defaults.aspect_ratio",
                    f"'{defaults.aspect_ratio}' is not in technical.aspect_ratios",
                    allowed=tuple(ratios),
                    file=file_name,
                )
            for field_name in ("required", "forbidden"):
                refs: list[str] = getattr(frame, field_name)
                for position, ref in enumerate(refs):
                    if not _ref_exists(ref, ids):
                        problem = _unknown_ref(f"{where}.{field_name}[{position}]", ref, ids)
                        yield Problem(
                            problem.code,
                            problem.field,
                            problem.message,
                            problem.allowed,
                            file=file_name,
                        )


def _unknown_ref(where: str, ref: str, ids: dict[str, set[str]]) -> Problem:
    kind, _, option_id = ref.partition(":")
    allowed = tuple(sorted(f"{kind}:{i}" for i in ids.get(kind, set())))
    return Problem(
        ProblemCode.PACK_REFERENCE,
        where,
        f"{kind} '{option_id}' does not exist",
        allowed=allowed,
        file=CATALOG_FILE,
    )
