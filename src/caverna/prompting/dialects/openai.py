"""OpenAI Images: natural-language paragraphs, negatives as "avoid" sentences, an allowed size.

GPT image models take no negative prompt, no weights and no seed, so the brand's exclusions are
stated in prose and the must-keep traits are spelled out as an instruction.
"""

from __future__ import annotations

from functools import lru_cache

from caverna.brand.pack import BrandPack
from caverna.prompting.dialects.base import CompiledPrompt, Dialect, compiled, dimensions, ratio
from caverna.prompting.spec import PromptSpec, SectionKey, sentence_case

NAME = "openai"
MAX_PROMPT_CHARS = 32_000
_FIXED_SIZES = {"square": "1024x1024", "portrait": "1024x1536", "landscape": "1536x1024"}
_MAX_FLEX_AREA = 2560 * 1440  # above this gpt-image-2 sizes are experimental

ORDER: tuple[SectionKey, ...] = (
    SectionKey.STYLE,
    SectionKey.SUBJECT,
    SectionKey.SIGNATURE,
    SectionKey.BODY,
    SectionKey.POSE,
    SectionKey.OUTFIT,
    SectionKey.FOOTWEAR,
    SectionKey.PROPS,
    SectionKey.SCENE,
    SectionKey.ENVIRONMENT,
    SectionKey.LIGHTING,
    SectionKey.COMPOSITION,
    SectionKey.CONTINUITY,
    SectionKey.NOTES,
    SectionKey.SAFEGUARDS,
)


def flexible_sizes(model: str) -> bool:
    """gpt-image-2 and later take any WxH in steps of 16; the first generation a fixed set."""
    return model.startswith("gpt-image-") and not model.startswith("gpt-image-1")


def size_for(model: str, aspect_ratio: str, megapixels: float) -> str:
    if flexible_sizes(model):
        budget = min(megapixels, _MAX_FLEX_AREA / (1024 * 1024))
        width, height = dimensions(aspect_ratio, budget, 16)
        # snapping to 16 can push an extreme ratio just past the model's 1:3..3:1 bounds
        while width * 3 < height:
            height -= 16
        while height * 3 < width:
            width -= 16
        return f"{width}x{height}"
    width, height = ratio(aspect_ratio)
    shape = "square" if width == height else "portrait" if height > width else "landscape"
    return _FIXED_SIZES[shape]


@lru_cache(maxsize=256)
def avoid_sentences(terms: tuple[str, ...], per_sentence: int = 8) -> tuple[str, ...]:
    sentences = []
    for start in range(0, len(terms), per_sentence):
        chunk = list(terms[start : start + per_sentence])
        listed = chunk[0] if len(chunk) == 1 else f"{', '.join(chunk[:-1])} or {chunk[-1]}"
        sentences.append(f"Avoid {listed}.")
    return tuple(sentences)


@lru_cache(maxsize=64)
def keep_sentence(pack: BrandPack) -> str:
    traits = pack.model.foundation.character.must_never_change
    keep = ", ".join(trait.term for trait in traits)
    return sentence_case(f"keep these traits exactly as described: {keep}")


def compile_openai(spec: PromptSpec) -> CompiledPrompt:
    settings = spec.pack.model.foundation.technical.providers.openai
    technical = spec.pack.model.foundation.technical
    paragraphs = []
    for section in spec.ordered(ORDER):
        text = section.prose()
        if section.key is SectionKey.STYLE:
            paragraphs.append(text)
        else:
            paragraphs.append(f"{section.label}: {text}")
    paragraphs.append(keep_sentence(spec.pack))
    paragraphs.append(" ".join(avoid_sentences(spec.negative)))
    prompt = "\n\n".join(paragraphs)

    size = size_for(settings.model, spec.params.aspect_ratio, technical.megapixels)
    warnings = []
    if spec.params.seed is not None:
        warnings.append("OpenAI image models take no seed: this result cannot be reproduced")
    if not flexible_sizes(settings.model):
        warnings.append(
            f"{settings.model} offers only 1024x1024, 1024x1536 and 1536x1024: "
            f"{size} is the nearest to {spec.params.aspect_ratio}"
        )
    payload = {
        "model": settings.model,
        "prompt": prompt,
        "n": 1,
        "size": size,
        "quality": settings.quality,
        "output_format": settings.output_format,
    }
    return compiled(
        spec,
        NAME,
        prompt=prompt,
        negative_prompt=None,
        payload=payload,
        seed=None,
        warnings=warnings,
    )


DIALECT = Dialect(NAME, "OpenAI Images", compile_openai, MAX_PROMPT_CHARS)
