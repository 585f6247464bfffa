"""Stability v2beta: comma-separated prompt, a separate negative prompt, an aspect ratio."""

from __future__ import annotations

from caverna.prompting.dialects.base import (
    SD_ORDER,
    CompiledPrompt,
    Dialect,
    compiled,
    phrases,
    ratio,
    strip_weight_syntax,
)
from caverna.prompting.spec import PromptSpec

NAME = "stability"
MAX_PROMPT_CHARS = 10_000
SUPPORTED_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")


def nearest_ratio(aspect_ratio: str) -> str:
    width, height = ratio(aspect_ratio)
    target = width / height
    return min(SUPPORTED_RATIOS, key=lambda r: abs(ratio(r)[0] / ratio(r)[1] - target))


def compile_stability(spec: PromptSpec) -> CompiledPrompt:
    settings = spec.pack.model.foundation.technical.providers.stability
    keep = [trait.term for trait in spec.must_keep]
    prompt = ", ".join([*keep, *phrases(spec, SD_ORDER, strip_weight_syntax)])
    negative = ", ".join(spec.negative)
    warnings = []
    aspect_ratio = spec.params.aspect_ratio
    if aspect_ratio not in SUPPORTED_RATIOS:
        aspect_ratio = nearest_ratio(aspect_ratio)
        warnings.append(f"Stability has no {spec.params.aspect_ratio}; using {aspect_ratio}")
    form: dict[str, str] = {
        "prompt": prompt,
        "negative_prompt": negative,
        "aspect_ratio": aspect_ratio,
        "output_format": settings.output_format,
    }
    if spec.params.seed is not None:
        form["seed"] = str(spec.params.seed)
        if spec.params.seed == 0:
            warnings.append("Stability treats seed 0 as 'random'")
    if settings.style_preset is not None:
        form["style_preset"] = settings.style_preset
    if settings.endpoint == "sd3" and settings.model:
        form["model"] = settings.model
        if settings.model.endswith("large-turbo"):
            warnings.append(f"{settings.model} does not honour the negative prompt")
    payload = {"endpoint": settings.endpoint, "form": form}
    return compiled(
        spec,
        NAME,
        prompt=prompt,
        negative_prompt=negative,
        payload=payload,
        seed=spec.params.seed,
        warnings=warnings,
    )


DIALECT = Dialect(NAME, "Stability AI", compile_stability, MAX_PROMPT_CHARS, MAX_PROMPT_CHARS)
