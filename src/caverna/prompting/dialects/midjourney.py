"""Midjourney (through a proxy): one line of prose, then `--` parameters at the end.

`--no` carries the negatives, including the body safeguards: Midjourney follows "no extra
fingers" far better than a positive sentence about five fingers, and the prompt travels as a
Discord command whose text option holds at most 6,000 characters, so the positive anatomy
rules are left out here. The pack's reference image becomes `--oref` (V7 and later) or `--cref`
(V6), the flags Midjourney offers for keeping one character across images.
"""

from __future__ import annotations

import re

from caverna.prompting.dialects.base import CompiledPrompt, Dialect, compiled
from caverna.prompting.spec import PromptSpec, SectionKey, sentence_case

NAME = "midjourney"
# The proxies submit /imagine through Discord, whose slash-command text options end at 6,000.
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
        if section.key is SectionKey.SUBJECT:
            # no weights in this dialect: the must-keep traits are repeated early instead
            keep = ", ".join(trait.term for trait in spec.must_keep)
            parts.append(sentence_case(f"always {keep}"))
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
