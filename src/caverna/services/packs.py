"""Pack use cases: list what is installed, and validate packs deeply before a team ships one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from caverna.brand.loader import iter_pack_dirs, load_pack
from caverna.brand.pack import BrandPack
from caverna.brand.registry import PackRegistry
from caverna.domain.problems import (
    InvalidPackError,
    InvalidParametersError,
    Problem,
    ProblemCode,
)
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.prompting.engine import PromptEngine


@dataclass(frozen=True)
class PackReport:
    """The outcome of validating one pack folder."""

    path: str
    pack_id: str | None
    version: str | None
    problems: tuple[Problem, ...] = field(default=())
    frames_compiled: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "pack": self.pack_id,
            "pack_version": self.version,
            "ok": self.ok,
            "frames_compiled": self.frames_compiled,
            "errors": [p.to_dict() for p in self.problems],
        }


def validate_folder(folder: Path) -> list[PackReport]:
    """Validate a pack folder, or every pack in a folder of packs."""
    folders = list(iter_pack_dirs(folder))
    if not folders:
        problem = Problem(
            ProblemCode.PACK_FILE_MISSING,
            "",
            "no brand pack here: a pack folder holds a pack.yaml",
            file=str(folder),
        )
        return [PackReport(str(folder), None, None, (problem,))]
    return [validate_pack_dir(path) for path in folders]


def validate_installed(registry: PackRegistry) -> list[PackReport]:
    return [validate_pack_dir(location.path) for location in registry.locations().values()]


def validate_pack_dir(folder: Path) -> PackReport:
    """Load the pack, then compile every frame's defaults in every dialect.

    Loading proves the files are well-formed and consistent; compiling proves that what a user
    gets by accepting the defaults is valid for every provider (prompt lengths included).
    """
    try:
        pack = load_pack(folder)
    except InvalidPackError as exc:
        return PackReport(str(folder), None, None, exc.problems)
    problems, compiled = compile_every_frame(pack)
    return PackReport(str(folder), pack.id, pack.version, tuple(problems), compiled)


def compile_every_frame(pack: BrandPack) -> tuple[list[Problem], int]:
    engine = PromptEngine(PackRegistry(include_builtin=False, preloaded=[pack]))
    problems: list[Problem] = []
    count = 0
    for sequence_id in pack.sequences:
        for dialect in DIALECT_NAMES:
            try:
                count += len(engine.compile_sequence(sequence_id, {"pack": pack.id}, dialect))
            except InvalidParametersError as exc:
                problems.extend(
                    Problem(
                        p.code,
                        f"{sequence_id}.{p.field} ({dialect})",
                        p.message,
                        p.allowed,
                        file=f"sequences/{sequence_id}.yaml",
                    )
                    for p in exc.problems
                )
    return problems, count
