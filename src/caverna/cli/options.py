"""Command-line options shared by the commands that take image parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from caverna.prompting.dialects.registry import DIALECT_NAMES

PackOpt = Annotated[str | None, typer.Option("--pack", help="Brand pack id.")]
PoseOpt = Annotated[str | None, typer.Option("--pose", help="Pose id.")]
OutfitOpt = Annotated[str | None, typer.Option("--outfit", help="Outfit id.")]
FootwearOpt = Annotated[str | None, typer.Option("--footwear", help="Footwear id.")]
PropOpt = Annotated[
    list[str] | None, typer.Option("--prop", help="Prop id (repeatable, at most 2).")
]
NoPropsOpt = Annotated[
    bool, typer.Option("--no-props", help="No props, even if the frame has defaults.")
]
FrameOpt = Annotated[
    str | None, typer.Option("--frame", help="Frame, as sequence/frame or a unique frame id.")
]
AspectRatioOpt = Annotated[str | None, typer.Option("--aspect-ratio", help="e.g. 9:16.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed (0 to 4294967294).")]
SceneNotesOpt = Annotated[
    str | None, typer.Option("--scene-notes", help="Free art-direction notes (≤300 chars).")
]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", help=f"One of {', '.join(DIALECT_NAMES)}.")
]
PacksOpt = Annotated[
    list[Path] | None,
    typer.Option("--packs", help="Extra folder with brand packs (repeatable).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Also copy the images into this folder.")
]
UserOpt = Annotated[str, typer.Option("--user", help="Owner of the images.")]


def image_params(
    *,
    pack: str | None = None,
    pose: str | None = None,
    outfit: str | None = None,
    footwear: str | None = None,
    prop: list[str] | None = None,
    no_props: bool = False,
    frame: str | None = None,
    aspect_ratio: str | None = None,
    seed: int | None = None,
    scene_notes: str | None = None,
) -> dict[str, Any]:
    """The request body a command's options describe; unset options are left out."""
    given = {
        "pack": pack,
        "pose": pose,
        "outfit": outfit,
        "footwear": footwear,
        "frame": frame,
        "aspect_ratio": aspect_ratio,
        "seed": seed,
        "scene_notes": scene_notes,
    }
    params: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if prop or no_props:
        params["props"] = [] if no_props else list(prop or [])
    return params
