"""Midjourney (through a proxy): one line of prose, then `--` parameters at the end.

`--no` carries the negatives; the pack's reference image becomes `--oref` (V7 and later) or
`--cref` (V6), the flags Midjourney offers for keeping one character across images.
"""

from __future__ import annotations

import re

from caverna.prompting.dialects.base import CompiledPrompt, Dialect, compiled
from caverna.prompting.spec import PromptSpec, SectionKey

NAME = "midjourney"
# Midjourney publishes no limit; long prompts dilute attention and proxies truncate, so we keep
# well under the lengths seen to work.
MAX_PROMPT_CHARS = 6_000

ORDER: tuple[SectionKey, ...] = (
    SectionKey.STYLE,
    SectionKey.SUBJECT,
    SectionKey.SIGNATURE,
    SectionKey.POSE,
    SectionKey.OUTFIT,
    SectionKey.FOOTWEAR,
    SectionKey.PROPS,
    SectionKey.SCENE,
    SectionKey.BODY,
    SectionKey.COMPOSITION,
    SectionKey.ENVIRONMENT,
    SectionKey.LIGHTING,
    SectionKey.CONTINUITY,
    SectionKey.NOTES,
    SectionKey.SAFEGUARDS,
)


def neutralise(text: str) -> str:
    """Free text must not open a parameter (`--x`) or a multi-prompt weight (`::`)."""
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r":{2,}", ":", text)
    return text.replace("\n", " ")


def major_version(version: str) -> int:
    return int(version.split(".")[0])


def compile_midjourney(spec: PromptSpec) -> CompiledPrompt:
    settings = spec.pack.model.foundation.technical.providers.midjourney
    reference = spec.pack.model.manifest.reference_image_url
    parts = []
    for section in spec.ordered(ORDER):
        prose = section.prose()
        parts.append(neutralise(prose) if section.key is SectionKey.NOTES else prose)
    text = " ".join(parts)
    negative = ", ".join(spec.negative)
    flags = [f"--ar {spec.params.aspect_ratio}", f"--no {negative}"]
    if spec.params.seed is not None:
        flags.append(f"--seed {spec.params.seed}")
    flags.append(f"--stylize {settings.stylize}")
    if settings.style_raw:
        flags.append("--style raw")
    flags.append(f"--v {settings.version}")
    warnings = []
    if reference:
        if major_version(settings.version) >= 7:
            flags.append(f"--oref {reference} --ow {settings.reference_weight}")
        else:
            flags.append(f"--cref {reference} --cw {min(settings.reference_weight, 100)}")
    else:
        warnings.append(
            "the pack declares no reference image: character consistency rests on the text alone"
        )
    prompt = f"{text} {' '.join(flags)}"
    return compiled(
        spec,
        NAME,
        prompt=prompt,
        negative_prompt=negative,
        payload={"prompt": prompt},
        seed=spec.params.seed,
        warnings=warnings,
    )


DIALECT = Dialect(NAME, "Midjourney (proxy)", compile_midjourney, MAX_PROMPT_CHARS)
