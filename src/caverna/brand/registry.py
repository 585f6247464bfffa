"""Finds installed packs (shipped with the package, or in folders the user names) by id."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from caverna.brand.loader import MANIFEST_FILE, iter_pack_dirs, load_pack
from caverna.brand.pack import BrandPack
from caverna.domain.problems import InvalidParametersError, Problem, ProblemCode
from caverna.domain.suggest import closest

BUILTIN_PACKS_DIR = Path(__file__).resolve().parent.parent / "packs"
DEFAULT_PACK_ID = "capitao-caverna"


@dataclass(frozen=True, slots=True)
class PackLocation:
    id: str
    path: Path
    builtin: bool


class PackRegistry:
    """Maps pack ids to folders; loads each pack once, on first use.

    Folders named by the user come before the shipped ones, so a brand team can override the
    default pack with an edited copy of the same id.
    """

    def __init__(
        self,
        search_paths: Iterable[Path] = (),
        *,
        include_builtin: bool = True,
        preloaded: Iterable[BrandPack] = (),
    ):
        self._roots: list[tuple[Path, bool]] = [(Path(p), False) for p in search_paths]
        if include_builtin:
            self._roots.append((BUILTIN_PACKS_DIR, True))
        self._locations: dict[str, PackLocation] | None = None
        self._loaded: dict[str, BrandPack] = {pack.id: pack for pack in preloaded}
        self._lock = threading.Lock()

    def locations(self) -> dict[str, PackLocation]:
        if self._locations is None:
            found: dict[str, PackLocation] = {
                pack_id: PackLocation(pack_id, Path(pack.source), False)
                for pack_id, pack in self._loaded.items()
            }
            for root, builtin in self._roots:
                for folder in iter_pack_dirs(root):
                    pack_id = _manifest_id(folder) or folder.name
                    found.setdefault(pack_id, PackLocation(pack_id, folder, builtin))
            self._locations = found
        return self._locations

    def ids(self) -> list[str]:
        return sorted(self.locations())

    def get(self, pack_id: str) -> BrandPack:
        """The loaded pack; raises InvalidParametersError for an unknown id, InvalidPackError for
        a broken pack."""
        with self._lock:
            if pack_id in self._loaded:
                return self._loaded[pack_id]
            location = self.locations().get(pack_id)
            if location is None:
                raise InvalidParametersError(
                    (unknown_pack_problem(pack_id, self.ids()),), "unknown brand pack"
                )
            pack = load_pack(location.path)
            self._loaded[pack_id] = pack
            return pack


def unknown_pack_problem(pack_id: str, known: list[str]) -> Problem:
    return Problem(
        ProblemCode.UNKNOWN_PACK,
        "pack",
        f"no brand pack with id '{pack_id}' is installed",
        allowed=tuple(known),
        suggestion=closest(pack_id, known),
    )


def _manifest_id(folder: Path) -> str | None:
    try:
        data = yaml.safe_load((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    pack_id = data.get("id") if isinstance(data, dict) else None
    return pack_id if isinstance(pack_id, str) else None
