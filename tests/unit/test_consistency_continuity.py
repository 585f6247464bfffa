"""Storyboard continuity: drift between consecutive frames, and the frame that breaks it."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from PIL import Image

from caverna.brand.registry import PackRegistry
from caverna.consistency.continuity import continuity
from caverna.consistency.report import ConsistencyReport, Expectations, analyse
from caverna.consistency.sheet import BREAK_OUTLINE, SheetFrame, caption, continuity_sheet
from caverna.imaging import encode_image
from caverna.prompting.engine import PromptEngine
from caverna.providers.preview import draw_preview

REGISTRY = PackRegistry()
PACK = REGISTRY.get("capitao-caverna")
FRAMES = PromptEngine(REGISTRY).compile_sequence("onboarding", {"seed": 4}, "preview")
CANDY = [
    {"name": n, "hex": h, "role": "test"}
    for n, h in (
        ("pink", "#FF5DA2"),
        ("cyan", "#22D3EE"),
        ("lime", "#A3E635"),
        ("violet", "#A855F7"),
        ("lemon", "#FDE047"),
    )
]


def storyboard(swap_at: int | None = None) -> list[tuple[str, Image.Image, ConsistencyReport]]:
    out = []
    for index, compiled in enumerate(FRAMES):
        scene: dict[str, Any] = copy.deepcopy(compiled.payload)
        if index == swap_at:
            scene["palette"] = CANDY
        image = draw_preview(scene, prompt=compiled.prompt)
        frame_id = compiled.payload["frame"].split("/")[1]
        out.append((frame_id, image, analyse(image, Expectations.for_pack(PACK))))
    return out


@pytest.fixture(scope="module")
def steady() -> list[tuple[str, Image.Image, ConsistencyReport]]:
    return storyboard()


@pytest.fixture(scope="module")
def swapped() -> list[tuple[str, Image.Image, ConsistencyReport]]:
    return storyboard(swap_at=3)


def test_the_storyboard_as_designed_has_no_break(
    steady: list[tuple[str, Image.Image, ConsistencyReport]],
) -> None:
    result = continuity([(frame_id, report) for frame_id, _, report in steady])
    assert result.breaks == ()
    assert len(result.transitions) == len(FRAMES) - 1
    assert all(not t.breaks for t in result.transitions)


def test_a_frame_with_a_swapped_palette_is_flagged_and_only_it(
    swapped: list[tuple[str, Image.Image, ConsistencyReport]],
) -> None:
    result = continuity([(frame_id, report) for frame_id, _, report in swapped])
    odd = swapped[3][0]
    assert result.breaks == (odd,)
    assert result.transitions[2].palette_break
    assert result.transitions[3].palette_break
    assert "palette" in result.reasons[odd][0]
    data = result.to_dict()
    assert data["breaks"] == [odd]
    assert data["thresholds"]["palette_delta_e"] == result.palette_threshold


def test_a_brightness_spike_breaks_both_transitions_around_it(
    steady: list[tuple[str, Image.Image, ConsistencyReport]],
) -> None:
    frames = [(frame_id, report) for frame_id, _, report in steady[:3]]
    frame_id, report = frames[1]
    frames[1] = (
        frame_id,
        report.model_copy(update={"brightness": min(1.0, report.brightness + 0.4)}),
    )
    result = continuity(frames)
    assert all(t.brightness_break for t in result.transitions)
    assert result.breaks == (frame_id,)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        continuity([])
    report = storyboard()[0][2]
    with pytest.raises(ValueError, match="unique"):
        continuity([("a", report), ("a", report)])


def test_contact_sheet_draws_scores_and_outlines_the_break(
    swapped: list[tuple[str, Image.Image, ConsistencyReport]],
) -> None:
    result = continuity([(frame_id, report) for frame_id, _, report in swapped])
    frames = [
        SheetFrame(frame_id, frame_id.replace("-", " "), encode_image(image, "png"), report)
        for frame_id, image, report in swapped
    ]
    data = continuity_sheet(frames, result)
    sheet = Image.open(io.BytesIO(data))
    assert sheet.format == "PNG"
    text = caption(frames[3], 4, result)
    assert text.startswith("4. carving the goals")
    assert "overall" in text
    assert "palette" in text
    assert "BREAK" in text
    assert "BREAK" not in caption(frames[2], 3, result)
    # the red outline sits 4 px outside the fourth cell (first row, fourth column)
    layout_margin, cell, gap = 24, 256, 16
    left = layout_margin + 3 * (cell + gap) - 3
    assert sheet.convert("RGB").getpixel((left, layout_margin + cell // 2)) == BREAK_OUTLINE
    other_left = layout_margin + 2 * (cell + gap) - 3
    assert sheet.convert("RGB").getpixel((other_left, layout_margin + cell // 2)) != BREAK_OUTLINE
