"""Storyboard continuity: how much palette and brightness move from one frame to the next.

It reads the frames' consistency reports (their dominant palettes and mean brightness), so it
needs no pixels and can run again whenever a single frame is remade. A storyboard is allowed to
change its light on purpose (day, torch, sunrise); the thresholds are set above the drift that
such intended changes cause in the preview renders, and a break is a prompt to look, not a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from caverna.consistency.palette import DominantColour, palette_distance
from caverna.consistency.report import ConsistencyReport

# Symmetric weighted ΔE00 between consecutive frames' dominant palettes above which a transition
# breaks. The onboarding storyboard's previews, one palette under lights from 1900 K to 6000 K,
# drift 4-8 from frame to frame; a frame drawn in another, saturated palette moves 13 or more.
PALETTE_BREAK_DELTA_E = 10.0
# ΔE00 of one frame's palette from the pooled palette of all the others above which the frame
# is an outlier (the same previews: 3-5.5; the frame in another palette: 13)
OUTLIER_DELTA_E = 8.0
# change of mean brightness (0-1) between consecutive frames above which a transition breaks
BRIGHTNESS_BREAK = 0.2


@dataclass(frozen=True, slots=True)
class Transition:
    before: str
    after: str
    palette_delta_e: float
    brightness_delta: float  # after minus before
    palette_break: bool
    brightness_break: bool

    @property
    def breaks(self) -> bool:
        return self.palette_break or self.brightness_break


@dataclass(frozen=True, slots=True)
class ContinuityReport:
    frames: tuple[str, ...]
    transitions: tuple[Transition, ...]
    outlier_delta_e: dict[str, float]  # each frame against the pooled palette of all the others
    breaks: tuple[str, ...]  # frames that break continuity, in story order
    reasons: dict[str, tuple[str, ...]]
    palette_threshold: float
    outlier_threshold: float
    brightness_threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": list(self.frames),
            "transitions": [
                {
                    "before": t.before,
                    "after": t.after,
                    "palette_delta_e": round(t.palette_delta_e, 3),
                    "brightness_delta": round(t.brightness_delta, 4),
                    "palette_break": t.palette_break,
                    "brightness_break": t.brightness_break,
                }
                for t in self.transitions
            ],
            "outlier_delta_e": {k: round(v, 3) for k, v in self.outlier_delta_e.items()},
            "breaks": list(self.breaks),
            "reasons": {k: list(v) for k, v in self.reasons.items()},
            "thresholds": {
                "palette_delta_e": self.palette_threshold,
                "outlier_delta_e": self.outlier_threshold,
                "brightness": self.brightness_threshold,
            },
        }


def continuity(
    frames: Sequence[tuple[str, ConsistencyReport]],
    *,
    palette_threshold: float = PALETTE_BREAK_DELTA_E,
    outlier_threshold: float = OUTLIER_DELTA_E,
    brightness_threshold: float = BRIGHTNESS_BREAK,
) -> ContinuityReport:
    """Drift between consecutive frames (in the order given) and the frames that break it.

    A frame breaks continuity when its palette is far from the pooled palette of all the other
    frames, or when the transitions on both sides of it break (a spike that comes back). One
    broken transition alone does not name a frame: either side of it could be the odd one.
    """
    if not frames:
        raise ValueError("continuity needs at least one frame")
    ids = [frame_id for frame_id, _ in frames]
    if len(set(ids)) != len(ids):
        raise ValueError("frame ids must be unique")
    palettes = [report.dominant_colours() for _, report in frames]
    transitions = tuple(
        _transition(
            ids[i],
            ids[i + 1],
            palettes[i],
            palettes[i + 1],
            frames,
            i,
            palette_threshold,
            brightness_threshold,
        )
        for i in range(len(frames) - 1)
    )
    outliers: dict[str, float] = {}
    if len(frames) > 2:
        for index, frame_id in enumerate(ids):
            pooled = _pooled(palettes[:index] + palettes[index + 1 :])
            outliers[frame_id] = palette_distance(palettes[index], pooled)
    reasons: dict[str, list[str]] = {}
    for index, frame_id in enumerate(ids):
        if outliers.get(frame_id, 0.0) > outlier_threshold:
            reasons.setdefault(frame_id, []).append(
                f"palette ΔE00 {outliers[frame_id]:.1f} from the rest of the sequence"
            )
        if 0 < index < len(ids) - 1:
            incoming, outgoing = transitions[index - 1], transitions[index]
            if incoming.breaks and outgoing.breaks:
                reasons.setdefault(frame_id, []).append("breaks with the frames on both sides")
    breaks = tuple(frame_id for frame_id in ids if frame_id in reasons)
    return ContinuityReport(
        frames=tuple(ids),
        transitions=transitions,
        outlier_delta_e=outliers,
        breaks=breaks,
        reasons={k: tuple(v) for k, v in reasons.items()},
        palette_threshold=palette_threshold,
        outlier_threshold=outlier_threshold,
        brightness_threshold=brightness_threshold,
    )


def _transition(
    before: str,
    after: str,
    first: list[DominantColour],
    second: list[DominantColour],
    frames: Sequence[tuple[str, ConsistencyReport]],
    index: int,
    palette_threshold: float,
    brightness_threshold: float,
) -> Transition:
    delta_e = palette_distance(first, second)
    brightness = frames[index + 1][1].brightness - frames[index][1].brightness
    return Transition(
        before=before,
        after=after,
        palette_delta_e=delta_e,
        brightness_delta=brightness,
        palette_break=delta_e > palette_threshold,
        brightness_break=abs(brightness) > brightness_threshold,
    )


def _pooled(palettes: Sequence[list[DominantColour]]) -> list[DominantColour]:
    """All the colours of several palettes, each palette counting equally."""
    share = 1 / len(palettes)
    return [DominantColour(c.rgb, c.weight * share) for palette in palettes for c in palette]
