"""The continuity contact sheet: the storyboard's frames in order with their scores underneath.

It reuses the storyboard export's contact sheet and adds, through its caption hook, a bar in the
status colour of each frame's report across the top of its cell and a red frame around the cells
that break continuity, so the odd frame out is visible before any number is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import ImageDraw

from caverna.consistency.continuity import ContinuityReport
from caverna.consistency.report import ConsistencyReport
from caverna.imaging.contact_sheet import SheetCell, SheetLayout, compose_contact_sheet

STATUS_COLOURS: dict[str, tuple[int, int, int]] = {
    "pass": (46, 139, 87),
    "warn": (222, 158, 36),
    "fail": (200, 52, 44),
    "skipped": (150, 150, 150),
}
BREAK_OUTLINE = (200, 52, 44)
BAR_HEIGHT = 6
LAYOUT = SheetLayout(columns=4, cell=256, gap=16, margin=24, font_size=14, caption_lines=3)


@dataclass(frozen=True, slots=True)
class SheetFrame:
    """One frame: its id, a title for people, its encoded image and its report (if analysed)."""

    id: str
    title: str
    image: bytes | None
    report: ConsistencyReport | None


def caption(frame: SheetFrame, number: int, continuity: ContinuityReport | None) -> str:
    """Title, then the scores: overall, palette, light, and the palette drift since the frame
    before."""
    parts = [f"{number}. {frame.title}"]
    report = frame.report
    if report is None:
        parts.append("· not analysed")
        return " ".join(parts)
    parts.append(f"· overall {_score(report.overall_score)}")
    parts.append(f"· palette {_score(report.score_of('palette'))}")
    parts.append(f"· light {_score(report.score_of('lighting'))}")
    if continuity is not None:
        incoming = next((t for t in continuity.transitions if t.after == frame.id), None)
        if incoming is not None:
            parts.append(f"· ΔE {incoming.palette_delta_e:.1f}")
        if frame.id in continuity.breaks:
            parts.append("· BREAK")
    return " ".join(parts)


def continuity_sheet(
    frames: Sequence[SheetFrame],
    continuity: ContinuityReport | None = None,
    layout: SheetLayout = LAYOUT,
) -> bytes:
    """A PNG contact sheet of `frames` in order, scores under each, breaks outlined in red."""
    if not frames:
        raise ValueError("a continuity sheet needs at least one frame")
    cells = [
        SheetCell(caption(frame, number, continuity), frame.image)
        for number, frame in enumerate(frames, start=1)
    ]
    breaks = set(continuity.breaks) if continuity else set()

    def mark(draw: ImageDraw.ImageDraw, index: int, box: tuple[int, int, int, int]) -> None:
        frame = frames[index]
        left, top, right, bottom = box
        status = frame.report.status if frame.report else "skipped"
        draw.rectangle((left, top, right - 1, top + BAR_HEIGHT - 1), fill=STATUS_COLOURS[status])
        if frame.id in breaks:
            outline = (left - 4, top - 4, right + 3, bottom + 3)
            draw.rectangle(outline, outline=BREAK_OUTLINE, width=3)

    return compose_contact_sheet(cells, layout, caption_hook=mark)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
