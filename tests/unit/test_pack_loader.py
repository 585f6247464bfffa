"""Loading packs: a good pack loads; each kind of broken pack is named by file, path and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from caverna.brand.loader import format_path, load_pack
from caverna.brand.pack import BrandPack
from caverna.domain.problems import InvalidPackError, Problem
from tests.conftest import FOX, PackEditor


def broken(folder: Path) -> list[Problem]:
    with pytest.raises(InvalidPackError) as caught:
        load_pack(folder)
    return list(caught.value.problems)


def test_fox_pack_loads_with_indexes() -> None:
    pack = load_pack(FOX)
    assert isinstance(pack, BrandPack)
    assert pack.id == "lumen-fox"
    assert pack.version == "0.3.1"
    assert list(pack.poses) == ["holding-high", "open-arms", "arms-crossed"]
    assert list(pack.frames) == ["night-walk/departure", "night-walk/arrival"]
    assert pack.frames["night-walk/arrival"].previous is not None
    assert pack.has_ref("prop:lantern")
    assert not pack.has_ref("prop:torch")
    assert not pack.has_ref("cape:lantern")


def test_content_hash_ignores_comments_and_key_order(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, _ = fox_copy
    original = load_pack(FOX).content_hash
    manifest = folder / "pack.yaml"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    reordered = ["# a comment the hash must not see", lines[2], lines[1], *lines[3:]]
    manifest.write_text("\n".join(reordered) + "\n", encoding="utf-8")
    assert load_pack(folder).content_hash == original


def test_content_hash_changes_with_meaning(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy
    original = load_pack(FOX).content_hash

    def change(data: dict[str, Any]) -> None:
        data["poses"][0]["prompt"] = "standing tall, one paw raised higher"

    edit("catalog.yaml", change)
    assert load_pack(folder).content_hash != original


def test_missing_file(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, _ = fox_copy
    (folder / "catalog.yaml").unlink()
    (problem,) = broken(folder)
    assert problem.code.value == "pack_file_missing"
    assert problem.file == "catalog.yaml"


def test_yaml_syntax_error_names_line(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, _ = fox_copy
    path = folder / "foundation.yaml"
    text = path.read_text(encoding="utf-8").replace("mood: gentle wonder", "mood: [gentle")
    path.write_text(text, encoding="utf-8")
    (problem,) = broken(folder)
    assert problem.code.value == "pack_yaml_syntax"
    assert problem.file == "foundation.yaml"
    assert problem.field.startswith("line ")


def test_schema_error_names_path_and_line(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, _ = fox_copy
    path = folder / "catalog.yaml"
    text = path.read_text(encoding="utf-8").replace("free_hands: 0", "free_hands: 3")
    path.write_text(text, encoding="utf-8")
    (problem,) = broken(folder)
    assert problem.code.value == "pack_schema"
    assert problem.file == "catalog.yaml"
    expected_line = text.splitlines().index("    free_hands: 3") + 1
    assert problem.field == f"poses[2].free_hands (line {expected_line})"


def test_unknown_key_is_an_error(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy
    edit("catalog.yaml", lambda data: data["props"][0].update({"colour": "lantern_gold"}))
    problems = broken(folder)
    assert [(p.code.value, p.field.split(" ")[0]) for p in problems] == [
        ("pack_schema", "props[0].colour")
    ]


def test_every_schema_problem_is_listed(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy

    def change(data: dict[str, Any]) -> None:
        data["poses"][0]["free_hands"] = -1
        data["outfits"][0]["labels"] = {"en": "Coat"}
        data["props"][1]["prompt"] = "a map --v 4"
        data["props"][2]["negative"] = ["blurry, dark"]

    edit("catalog.yaml", change)
    fields = {p.field.split(" ")[0] for p in broken(folder)}
    assert fields == {
        "poses[0].free_hands",
        "outfits[0].labels.pt-BR",
        "props[1].prompt",
        "props[2].negative[0]",
    }


@pytest.mark.parametrize(
    ("file_name", "change", "field"),
    [
        (
            "catalog.yaml",
            lambda d: d["outfits"][1].update({"excludes": ["prop:map-scrol"]}),
            "outfits[rain-cape].excludes[0]",
        ),
        (
            "catalog.yaml",
            lambda d: d["props"][3].update({"only_in_frames": ["night-walk/nowhere"]}),
            "props[scarf-pin].only_in_frames[0]",
        ),
        (
            "catalog.yaml",
            lambda d: d["props"][0].update({"color": "neon_pink"}),
            "props[lantern].color",
        ),
        (
            "catalog.yaml",
            lambda d: d["poses"][1].update({"expression": "furious"}),
            "poses[open-arms].expression",
        ),
        (
            "catalog.yaml",
            lambda d: d["props"][0].update({"requires": ["prop:lantern"]}),
            "props[lantern].requires[0]",
        ),
        (
            "foundation.yaml",
            lambda d: d["technical"].update({"default_aspect_ratio": "16:9"}),
            "technical.default_aspect_ratio",
        ),
        (
            "foundation.yaml",
            lambda d: d["character"].update({"default_expression": "sulking"}),
            "character.default_expression",
        ),
        (
            "sequences/night-walk.yaml",
            lambda d: d["frames"][0]["defaults"].update({"pose": "dancing"}),
            "frames[departure].defaults.pose",
        ),
        (
            "sequences/night-walk.yaml",
            lambda d: d["frames"][0].update({"required": ["prop:torch"]}),
            "frames[departure].required[0]",
        ),
    ],
)
def test_broken_references(
    fox_copy: tuple[Path, PackEditor], file_name: str, change: Any, field: str
) -> None:
    folder, edit = fox_copy
    edit(file_name, change)
    problems = broken(folder)
    assert [p.field for p in problems] == [field]
    assert problems[0].code.value == "pack_reference"


def test_duplicate_ids(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy
    edit("catalog.yaml", lambda d: d["props"].append(dict(d["props"][0])))
    problems = broken(folder)
    assert [(p.code.value, p.field) for p in problems] == [("pack_duplicate_id", "props[lantern]")]


def test_frame_defaults_must_obey_the_rules(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy
    edit(
        "sequences/night-walk.yaml",
        lambda d: d["frames"][0]["defaults"].update({"props": ["lantern", "map-scroll"]}),
    )
    (problem,) = broken(folder)
    assert problem.code.value == "pack_reference"
    assert problem.field == "frames[departure].defaults.props"
    assert "hand" in problem.message
    assert problem.file == "sequences/night-walk.yaml"


def test_not_a_mapping(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, _ = fox_copy
    (folder / "pack.yaml").write_text("- just\n- a list\n", encoding="utf-8")
    (problem,) = broken(folder)
    assert (problem.code.value, problem.file) == ("pack_schema", "pack.yaml")


@pytest.mark.parametrize(
    ("location", "text"),
    [
        (("poses", 3, "free_hands"), "poses[3].free_hands"),
        (("labels", "pt-BR"), "labels.pt-BR"),
        ((), "(root)"),
    ],
)
def test_format_path(location: tuple[int | str, ...], text: str) -> None:
    assert format_path(location) == text
