"""Reads a pack folder from disk and reports every problem with its file and YAML path.

Layout of a pack folder::

    pack.yaml                 manifest (id, pack_version, labels)
    foundation.yaml           character, environment, technical specs, safeguards, negatives
    catalog.yaml              poses, outfits, footwear, props
    sequences/<id>.yaml       storyboards, one per file

Loading has three stages and stops after the first that fails, because later stages cannot make
sense of a document that earlier ones rejected: YAML syntax, schema, cross-references.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from caverna.brand.pack import BrandPack
from caverna.brand.references import check_references
from caverna.brand.rules import check_frame_defaults
from caverna.brand.schema import BrandPackModel, Catalog, Foundation, PackManifest, Sequence
from caverna.domain.problems import InvalidPackError, Problem, ProblemCode

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it

MANIFEST_FILE = "pack.yaml"
FOUNDATION_FILE = "foundation.yaml"
CATALOG_FILE = "catalog.yaml"
SEQUENCES_DIR = "sequences"

_SECTIONS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("manifest", MANIFEST_FILE, PackManifest),
    ("foundation", FOUNDATION_FILE, Foundation),
    ("catalog", CATALOG_FILE, Catalog),
)


def is_pack_dir(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file()


def load_pack(folder: Path | str) -> BrandPack:
    """Load and fully validate one pack folder, or raise InvalidPackError with every problem."""
    root = Path(folder)
    problems: list[Problem] = []
    documents: dict[str, Any] = {}
    texts: dict[str, str] = {}

    for section, file_name, _ in _SECTIONS:
        path = root / file_name
        parsed = _read_yaml(path, file_name, problems)
        if parsed is not None:
            documents[section] = parsed[0]
            texts[file_name] = parsed[1]

    sequence_files = sorted((root / SEQUENCES_DIR).glob("*.yaml"))
    sequences: list[tuple[str, Any]] = []
    for path in sequence_files:
        relative = f"{SEQUENCES_DIR}/{path.name}"
        parsed = _read_yaml(path, relative, problems)
        if parsed is not None:
            sequences.append((relative, parsed[0]))
            texts[relative] = parsed[1]
    _fail_if(problems, root)

    validated: dict[str, Any] = {}
    for section, file_name, section_model in _SECTIONS:
        validated[section] = _validate(
            section_model, documents[section], file_name, texts, problems
        )
    validated_sequences = [
        _validate(Sequence, data, relative, texts, problems) for relative, data in sequences
    ]
    _fail_if(problems, root)

    model = BrandPackModel(
        manifest=validated["manifest"],
        foundation=validated["foundation"],
        catalog=validated["catalog"],
        sequences=validated_sequences,
    )
    sequence_file_of = {
        seq.id: relative for seq, (relative, _) in zip(validated_sequences, sequences, strict=True)
    }
    problems.extend(check_references(model, sequence_file_of))
    _fail_if(problems, root)
    pack = BrandPack(model=model, source=str(root))
    problems.extend(check_frame_defaults(pack))
    _fail_if(problems, root)
    return pack


def _fail_if(problems: list[Problem], root: Path) -> None:
    if problems:
        raise InvalidPackError(tuple(problems), f"brand pack at {root} is invalid")


def _read_yaml(path: Path, shown_as: str, problems: list[Problem]) -> tuple[Any, str] | None:
    if not path.is_file():
        problems.append(
            Problem(ProblemCode.PACK_FILE_MISSING, "", "the file is missing", file=shown_as)
        )
        return None
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        reason = getattr(exc, "problem", None) or str(exc)
        problems.append(
            Problem(ProblemCode.PACK_YAML_SYNTAX, where, f"YAML syntax: {reason}", file=shown_as)
        )
        return None
    if not isinstance(data, dict):
        problems.append(
            Problem(ProblemCode.PACK_SCHEMA, "", "the file must hold a mapping", file=shown_as)
        )
        return None
    return data, text


def _validate(
    model: type[BaseModel],
    data: Any,
    shown_as: str,
    texts: dict[str, str],
    problems: list[Problem],
) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            location = tuple(error["loc"])
            line = _line_of(texts.get(shown_as, ""), location)
            path = format_path(location)
            where = f"{path} (line {line})" if line else path
            problems.append(Problem(ProblemCode.PACK_SCHEMA, where, error["msg"], file=shown_as))
        return None


def format_path(location: tuple[int | str, ...]) -> str:
    """`('poses', 3, 'free_hands')` -> `poses[3].free_hands`."""
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts) or "(root)"


def _line_of(text: str, location: tuple[int | str, ...]) -> int | None:
    """Find the line of a YAML path; only runs on errors, so the extra parse costs nothing."""
    if not text:
        return None
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node else None
    for key in location:
        child = _child(node, key)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node | None, key: int | str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
                return value_node if isinstance(value_node, yaml.Node) else None
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        child = node.value[key]
        return child if isinstance(child, yaml.Node) else None
    return None


def iter_pack_dirs(folder: Path) -> Iterator[Path]:
    """A folder is a pack itself, or holds packs one level down."""
    if is_pack_dir(folder):
        yield folder
        return
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            if is_pack_dir(child):
                yield child
