"""The command line as a user drives it: exit codes, readable output, JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from caverna.cli.app import app
from tests.conftest import FOX, TEST_PACKS, PackEditor

runner = CliRunner()
WITH_FOX = ["--packs", str(TEST_PACKS)]


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})
    return result.exit_code, result.output


def run_json(*args: str) -> tuple[int, Any]:
    code, output = run(*args, "--json")
    return code, json.loads(output)


def test_version() -> None:
    code, output = run("--version")
    assert code == 0
    assert output.startswith("caverna ")


def test_pack_list_shows_builtin_and_user_packs() -> None:
    code, rows = run_json("pack", "list", *WITH_FOX)
    assert code == 0
    by_id = {row["id"]: row for row in rows}
    assert by_id["capitao-caverna"]["source"] == "built-in"
    assert by_id["lumen-fox"]["source"] == str(FOX)
    assert all(row["ok"] for row in rows)


def test_pack_list_table() -> None:
    code, output = run("pack", "list", "--locale", "en", *WITH_FOX)
    assert code == 0
    assert "Lumi, the lantern fox" in output
    assert "capitao-caverna" in output


def test_pack_show(default_pack: Any) -> None:
    code, output = run("pack", "show", "--locale", "en")
    assert code == 0
    assert default_pack.model.manifest.labels.en in output
    for pose in default_pack.poses:
        assert pose in output
    assert "onboarding" in output


def test_pack_show_json_round_trips() -> None:
    code, data = run_json("pack", "show", "lumen-fox", *WITH_FOX)
    assert code == 0
    assert data["manifest"]["id"] == "lumen-fox"
    assert data["manifest"]["labels"]["pt-BR"] == "Lumi, a raposa da lanterna"


def test_pack_show_unknown_pack_exits_2() -> None:
    code, data = run_json("pack", "show", "lumen-fx", *WITH_FOX)
    assert code == 2
    assert data["errors"][0]["code"] == "unknown_pack"
    assert data["errors"][0]["suggestion"] == "lumen-fox"


def test_pack_validate_installed() -> None:
    code, output = run("pack", "validate", *WITH_FOX)
    assert code == 0
    assert "✓ capitao-caverna" in output
    assert "✓ lumen-fox" in output


def test_pack_validate_a_users_folder() -> None:
    code, reports = run_json("pack", "validate", str(FOX))
    assert code == 0
    (report,) = reports
    assert report["ok"]
    assert report["pack"] == "lumen-fox"
    assert report["frames_compiled"] == 2 * 6


def test_pack_validate_broken_pack_exits_2(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy
    edit("catalog.yaml", lambda d: d["poses"][0].update({"free_hands": 5}))
    code, output = run("pack", "validate", str(folder))
    assert code == 2
    assert "pack_schema" in output
    assert "poses[0].free_hands" in output
    code, reports = run_json("pack", "validate", str(folder))
    assert code == 2
    assert reports[0]["errors"][0]["file"] == "catalog.yaml"


def test_pack_validate_folder_without_packs(tmp_path: Path) -> None:
    code, reports = run_json("pack", "validate", str(tmp_path))
    assert code == 2
    assert reports[0]["errors"][0]["code"] == "pack_file_missing"


def test_prompt_json_matches_engine(engine: Any) -> None:
    args = ["prompt", "--pack", "lumen-fox", "--frame", "departure", "--seed", "9"]
    code, data = run_json(*args, "--provider", "sdwebui", *WITH_FOX)
    assert code == 0
    expected = engine.compile({"pack": "lumen-fox", "frame": "departure", "seed": 9}, "sdwebui")
    assert data == json.loads(expected.to_json())


def test_prompt_repeatable_props_and_no_props() -> None:
    base = ["prompt", "--pack", "lumen-fox", "--pose", "open-arms", *WITH_FOX]
    code, data = run_json(*base, "--prop", "compass", "--prop", "lantern")
    assert code == 0
    assert data["params"]["props"] == ["lantern", "compass"]
    code, data = run_json(*base, "--no-props", "--frame", "arrival")
    assert code == 0
    assert data["params"]["props"] == []


def test_prompt_human_output() -> None:
    code, output = run(
        "prompt",
        "--pack",
        "lumen-fox",
        "--frame",
        "arrival",
        "--locale",
        "en",
        "--provider",
        "midjourney",
        *WITH_FOX,
    )
    assert code == 0
    assert "Arrival" in output
    assert "She reaches the clearing" in output
    assert "--ar 4:5" in output


def test_prompt_validation_errors_exit_2() -> None:
    code, output = run(
        "prompt",
        "--pack",
        "lumen-fox",
        "--pose",
        "open-arm",
        "--prop",
        "map-scroll",
        "--outfit",
        "rain-cape",
        *WITH_FOX,
    )
    assert code == 2
    assert "unknown_option" in output
    assert "did you mean 'open-arms'?" in output
    code, data = run_json(
        "prompt", "--pack", "lumen-fox", "--seed", "-4", "--provider", "dalle", *WITH_FOX
    )
    assert code == 2
    assert {e["code"] for e in data["errors"]} == {"out_of_range", "unknown_provider"}


def test_prompt_sequence_every_frame_in_order() -> None:
    code, data = run_json(
        "prompt",
        "--pack",
        "lumen-fox",
        "--sequence",
        "night-walk",
        "--seed",
        "3",
        "--provider",
        "stability",
        *WITH_FOX,
    )
    assert code == 0
    assert [item["params"]["frame"] for item in data] == [
        "night-walk/departure",
        "night-walk/arrival",
    ]
    assert {item["seed"] for item in data} == {3}


def test_prompt_sequence_rejects_per_frame_fields_and_reports_frames() -> None:
    code, data = run_json(
        "prompt",
        "--pack",
        "lumen-fox",
        "--sequence",
        "night-walk",
        "--pose",
        "open-arms",
        "--outfit",
        "rain-cape",
        *WITH_FOX,
    )
    assert code == 2
    fields = {(e["code"], e["field"]) for e in data["errors"]}
    assert ("not_allowed_in_sequence", "pose") in fields


def test_prompt_unknown_sequence() -> None:
    code, data = run_json("prompt", "--sequence", "onbording")
    assert code == 2
    assert data["errors"][0]["code"] == "unknown_sequence"
    assert data["errors"][0]["suggestion"] == "onboarding"


def test_default_storyboard_prints_every_frame(default_pack: Any) -> None:
    code, output = run("prompt", "--sequence", "onboarding")
    assert code == 0
    frames = default_pack.sequences["onboarding"].frames
    for index, frame in enumerate(frames, start=1):
        assert f"{index}/{len(frames)} · {frame.title.pt_br}" in output


def test_pack_path_from_environment() -> None:
    code, output = run(
        "prompt", "--pack", "lumen-fox", "--json", env={"CAVERNA_PACK_PATH": str(TEST_PACKS)}
    )
    assert code == 0
    assert json.loads(output)["pack"] == "lumen-fox"


def test_default_provider_from_environment() -> None:
    code, output = run(
        "prompt",
        "--pack",
        "lumen-fox",
        "--json",
        env={"CAVERNA_PACK_PATH": str(TEST_PACKS), "CAVERNA_PROVIDERS": "comfyui,preview"},
    )
    assert code == 0
    assert json.loads(output)["dialect"] == "comfyui"


@pytest.mark.parametrize("locale", ["fr", "EN"])
def test_bad_locale_is_a_usage_error(locale: str) -> None:
    code, output = run("pack", "show", "--locale", locale)
    assert code == 2
    assert "pt-BR or en" in output


def test_bad_configuration_is_a_clear_error() -> None:
    result = runner.invoke(app, ["pack", "list"], env={"CAVERNA_PROVIDERS": "preview,dalle"})
    assert result.exit_code == 2
    assert "configuration error: CAVERNA_PROVIDERS" in result.output
    assert "dalle" in result.output
