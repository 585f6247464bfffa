"""Each provider dialect renders the same spec faithfully, within that provider's rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from caverna.brand.loader import load_pack
from caverna.brand.registry import PackRegistry
from caverna.domain.problems import InvalidParametersError
from caverna.prompting.dialects.base import derived_seed, dimensions
from caverna.prompting.dialects.openai import avoid_sentences, size_for
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.prompting.dialects.stability import nearest_ratio
from caverna.prompting.engine import PromptEngine
from caverna.prompting.spec import template_version
from tests.conftest import FOX, PackEditor

DEPARTURE: dict[str, Any] = {"pack": "lumen-fox", "frame": "departure", "seed": 42}


def fox_engine_with(folder: Path) -> PromptEngine:
    return PromptEngine(PackRegistry([folder], include_builtin=False))


@pytest.mark.parametrize("dialect", DIALECT_NAMES)
def test_every_dialect_carries_versions_and_hash(engine: PromptEngine, dialect: str) -> None:
    compiled = engine.compile(DEPARTURE, dialect)
    pack = load_pack(FOX)
    assert compiled.dialect == dialect
    assert compiled.template_version == template_version(pack)
    assert compiled.pack_version == "0.3.1"
    assert compiled.params["frame"] == "night-walk/departure"
    assert compiled.to_json() == engine.compile(DEPARTURE, dialect).to_json()
    assert "star-shaped" in compiled.prompt  # the signature mark is always present


def test_template_version_changes_with_the_pack(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy
    before = fox_engine_with(folder).compile(DEPARTURE, "stability")
    edit("foundation.yaml", lambda d: d["environment"].update({"mood": "gentle awe"}))
    after = fox_engine_with(folder).compile(DEPARTURE, "stability")
    assert before.params_hash == after.params_hash
    assert before.template_version != after.template_version
    assert "gentle awe" in after.prompt


def test_openai_prose_with_avoid_sentences(engine: PromptEngine) -> None:
    compiled = engine.compile(DEPARTURE, "openai")
    payload = compiled.payload
    assert payload["model"] == "gpt-image-2"
    assert payload["prompt"] == compiled.prompt
    assert compiled.negative_prompt is None
    assert compiled.prompt.endswith(
        "\n\nAvoid text, watermark, logo, horror, extra limbs, extra fingers or fused toes."
    )
    assert "Keep these traits exactly as described: cream star-shaped forehead patch" in (
        compiled.prompt
    )
    assert "(" not in compiled.prompt
    assert "--" not in compiled.prompt
    assert "seed" not in payload
    assert any("no seed" in w for w in compiled.warnings)
    width, height = (int(v) for v in payload["size"].split("x"))
    assert width % 16 == 0
    assert height % 16 == 0
    assert width == height


def test_avoid_sentences_group_terms() -> None:
    assert avoid_sentences(("a",)) == ("Avoid a.",)
    assert avoid_sentences(("a", "b", "c"), per_sentence=2) == ("Avoid a or b.", "Avoid c.")


@pytest.mark.parametrize(
    ("model", "ratio", "size"),
    [
        ("gpt-image-1", "9:16", "1024x1536"),
        ("gpt-image-1-mini", "16:9", "1536x1024"),
        ("gpt-image-1.5", "1:1", "1024x1024"),
        ("gpt-image-2", "9:16", "768x1360"),
        ("gpt-image-2", "1:1", "1024x1024"),
        ("gpt-image-2.5-flare", "16:9", "1360x768"),
    ],
)
def test_openai_sizes_per_model(model: str, ratio: str, size: str) -> None:
    assert size_for(model, ratio, 1.0) == size


def test_openai_flexible_sizes_obey_the_model_rules() -> None:
    for ratio in ("9:16", "4:5", "2:3", "3:2", "16:9", "1:3", "3:1"):
        for megapixels in (0.25, 1.0, 4.0):
            width, height = (int(v) for v in size_for("gpt-image-2", ratio, megapixels).split("x"))
            assert width % 16 == 0
            assert height % 16 == 0
            assert 1 / 3 <= width / height <= 3
            assert width * height <= 2560 * 1440 * 1.01


def test_stability_form_fields(engine: PromptEngine) -> None:
    compiled = engine.compile({**DEPARTURE, "aspect_ratio": "4:5"}, "stability")
    form = compiled.payload["form"]
    assert compiled.payload["endpoint"] == "core"
    assert form["aspect_ratio"] == "4:5"
    assert form["seed"] == "42"
    assert form["style_preset"] == "3d-model"
    assert form["negative_prompt"] == compiled.negative_prompt
    assert form["prompt"].startswith("cream star-shaped forehead patch, white tail tip, ")
    assert all(isinstance(value, str) for value in form.values())  # multipart fields


def test_stability_maps_an_unsupported_ratio_to_the_nearest(engine: PromptEngine) -> None:
    compiled = engine.compile({**DEPARTURE, "aspect_ratio": "3:4"}, "stability")
    assert compiled.payload["form"]["aspect_ratio"] == "4:5"
    assert any("3:4" in w for w in compiled.warnings)
    assert nearest_ratio("10:17") == "9:16"


def test_midjourney_flags_at_the_end(engine: PromptEngine) -> None:
    compiled = engine.compile(DEPARTURE, "midjourney")
    text = compiled.prompt
    flags = text[text.index(" --ar ") :]
    assert flags == (
        " --ar 1:1 --no text, watermark, logo, horror, extra limbs, extra fingers, fused toes"
        " --seed 42 --stylize 100 --style raw --v 7"
    )
    assert text.count("--") == 6
    assert "\n" not in text
    assert compiled.payload == {"prompt": text}


def test_midjourney_reference_flags(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy
    url = "https://assets.example.org/lumi/reference.png"
    edit("pack.yaml", lambda d: d.update({"reference_image_url": url}))
    v7 = fox_engine_with(folder).compile(DEPARTURE, "midjourney")
    assert v7.prompt.endswith(f"--v 7 --oref {url} --ow 100")

    def v6(data: dict[str, Any]) -> None:
        data["technical"]["providers"] = {"midjourney": {"version": "6.1", "reference_weight": 80}}

    edit("foundation.yaml", v6)
    compiled = fox_engine_with(folder).compile(DEPARTURE, "midjourney")
    assert compiled.prompt.endswith(f"--v 6.1 --cref {url} --cw 80")


def test_free_text_cannot_inject_provider_syntax(engine: PromptEngine) -> None:
    notes = "snow (lots) -- v 4 --ar 1:2 :: weird [x]"
    params = {**DEPARTURE, "scene_notes": notes}
    mj = engine.compile(params, "midjourney").prompt
    assert "--ar 1:2" not in mj
    assert "::" not in mj
    assert mj.count("--ar") == 1
    sd = engine.compile(params, "sdwebui").prompt
    assert r"snow \(lots\)" in sd
    assert r"\[x\]" in sd
    stability = engine.compile(params, "stability").prompt
    assert "snow lots" in stability
    assert "(" not in stability.split("white tail tip")[1]


def test_sdwebui_weights_and_sizes(engine: PromptEngine) -> None:
    compiled = engine.compile({**DEPARTURE, "aspect_ratio": "9:16"}, "sdwebui")
    payload = compiled.payload
    assert compiled.prompt.startswith(
        "(cream star-shaped forehead patch:1.3), (white tail tip:1.2), "
    )
    assert payload["width"] % 64 == 0
    assert payload["height"] % 64 == 0
    assert (payload["width"], payload["height"]) == (768, 1344)
    assert payload["seed"] == 42
    assert payload["sampler_name"] == "DPM++ 2M"
    assert payload["scheduler"] == "Karras"
    assert payload["negative_prompt"] == compiled.negative_prompt
    unseeded = engine.compile({"pack": "lumen-fox"}, "sdwebui")
    assert unseeded.payload["seed"] == -1


def test_comfyui_graph_is_complete_and_linked(engine: PromptEngine) -> None:
    compiled = engine.compile(DEPARTURE, "comfyui")
    graph = compiled.payload["prompt"]
    outputs = {
        "CheckpointLoaderSimple": 3,
        "CLIPTextEncode": 1,
        "EmptyLatentImage": 1,
        "KSampler": 1,
        "VAEDecode": 1,
        "SaveImage": 0,
    }
    for node in graph.values():
        for value in node["inputs"].values():
            if isinstance(value, list):
                source, index = value
                assert source in graph
                assert index < outputs[graph[source]["class_type"]]
    sampler = graph["3"]["inputs"]
    assert sampler["seed"] == 42
    assert graph["6"]["inputs"]["text"] == compiled.prompt
    assert graph["7"]["inputs"]["text"] == compiled.negative_prompt
    assert graph[compiled.payload["output_node"]]["class_type"] == "SaveImage"
    json.dumps(graph)  # serialisable as the /prompt body


def test_comfyui_derives_a_seed_when_none_given(engine: PromptEngine) -> None:
    compiled = engine.compile({"pack": "lumen-fox"}, "comfyui")
    seed = compiled.payload["prompt"]["3"]["inputs"]["seed"]
    assert seed == derived_seed(compiled.params_hash) == compiled.seed
    assert compiled.warnings


def test_preview_scene_data(engine: PromptEngine) -> None:
    compiled = engine.compile(DEPARTURE, "preview")
    scene = compiled.payload
    assert scene["character"] == {
        "head_heights": 3.5,
        "placement": "left-third",
        "facing": "right",
        "height_fraction": 0.6,
    }
    assert scene["props"] == [{"id": "lantern", "color": "#F4B942", "hands": 1}]
    assert scene["outfit"] == {"id": "explorer-coat", "color": "#2F5D46"}
    assert scene["lighting"] == {"key_side": "left", "color_temperature_k": 2400, "mood": "hopeful"}
    assert scene["text_space"] == "top"
    assert (scene["width"], scene["height"]) == (1024, 1024)
    assert [c["hex"] for c in scene["palette"]][:2] == ["#C2562B", "#2E4A6B"]


@pytest.mark.parametrize(
    ("ratio", "multiple", "expected"),
    [("1:1", 64, (1024, 1024)), ("9:16", 64, (768, 1344)), ("16:9", 8, (1368, 768))],
)
def test_dimensions(ratio: str, multiple: int, expected: tuple[int, int]) -> None:
    assert dimensions(ratio, 1.0, multiple) == expected


def test_prompt_too_long_for_a_provider(fox_copy: tuple[Path, PackEditor]) -> None:
    folder, edit = fox_copy
    long_rule = "every paw keeps four separate toes " * 40

    def change(data: dict[str, Any]) -> None:
        data["safeguards"]["rules"] = [long_rule.strip()] * 16

    edit("foundation.yaml", change)
    engine = fox_engine_with(folder)
    assert engine.compile(DEPARTURE, "sdwebui").prompt  # no limit there
    with pytest.raises(InvalidParametersError) as caught:
        engine.compile(DEPARTURE, "stability")
    (problem,) = caught.value.problems
    assert problem.code.value == "prompt_too_long"
    assert problem.allowed == ("10000",)
    assert re.search(r"has \d+ characters; Stability AI accepts at most 10000", problem.message)
