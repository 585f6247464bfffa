"""The offline preview renderer's input: the scene as data (where, what colour, which light).

It also carries the provider-neutral text prompt, so a preview shows what a model would read.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from caverna.brand.pack import BrandPack
from caverna.prompting.dialects.base import (
    SD_ORDER,
    CompiledPrompt,
    Dialect,
    compiled,
    derived_seed,
    dimensions,
    phrases,
    strip_weight_syntax,
)
from caverna.prompting.spec import PromptSpec

NAME = "preview"
SIZE_MULTIPLE = 8


@lru_cache(maxsize=64)
def _palette(pack: BrandPack) -> tuple[tuple[str, str, str], ...]:
    return tuple((c.name, c.hex, c.role) for c in pack.model.foundation.technical.palette)


def palette_data(pack: BrandPack) -> list[dict[str, str]]:
    return [{"name": name, "hex": hex_, "role": role} for name, hex_, role in _palette(pack)]


def compile_preview(spec: PromptSpec) -> CompiledPrompt:
    pack = spec.pack
    foundation = pack.model.foundation
    technical = foundation.technical
    palette = {color.name: color.hex for color in technical.palette}
    params = spec.params
    width, height = dimensions(params.aspect_ratio, technical.megapixels, SIZE_MULTIPLE)
    seed = params.seed if params.seed is not None else derived_seed(spec.params_hash)
    frame = spec.frame.frame if spec.frame else None

    def colored(kind_table: Any, option_id: str) -> dict[str, Any]:
        option = kind_table[option_id]
        return {"id": option_id, "color": palette.get(option.color) if option.color else None}

    pose = pack.poses[params.pose]
    scene: dict[str, Any] = {
        "width": width,
        "height": height,
        "seed": seed,
        "palette": [{"name": c.name, "hex": c.hex, "role": c.role} for c in technical.palette],
        "character": {
            "head_heights": foundation.character.proportions.head_heights,
            "placement": frame.position.placement if frame else "center",
            "facing": frame.position.facing if frame else "viewer",
            "height_fraction": frame.position.height_fraction if frame else 0.7,
        },
        "pose": {"id": pose.id, "free_hands": pose.free_hands},
        "outfit": colored(pack.outfits, params.outfit),
        "footwear": colored(pack.footwear, params.footwear),
        "props": [
            {**colored(pack.props, prop), "hands": pack.props[prop].hands} for prop in params.props
        ],
        "lighting": {
            "key_side": frame.lighting.key_side if frame else "left",
            "color_temperature_k": (
                frame.lighting.color_temperature_k
                if frame
                else technical.lighting.color_temperature_k
            ),
            "mood": frame.lighting.mood if frame else None,
        },
        "shot": {"type": frame.shot.type, "angle": frame.shot.angle} if frame else None,
        "text_space": frame.text_space.side if frame else "none",
        "frame": params.frame,
    }
    prompt = ", ".join(
        [*(t.term for t in spec.must_keep), *phrases(spec, SD_ORDER, strip_weight_syntax)]
    )
    return compiled(
        spec,
        NAME,
        prompt=prompt,
        negative_prompt=", ".join(spec.negative),
        payload=scene,
        seed=seed,
    )


DIALECT = Dialect(NAME, "Offline preview", compile_preview, None)
