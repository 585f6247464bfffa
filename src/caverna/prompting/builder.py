"""Builds a PromptSpec from a pack and resolved parameters: pure, deterministic, no I/O.

Most of a prompt is the pack's foundation, the same for every request; the pieces are memoised
per loaded pack (packs are immutable and hashed by identity), so a request only assembles them.
"""

from __future__ import annotations

from functools import lru_cache

from caverna.brand.pack import BrandPack
from caverna.brand.schema import OptionKind
from caverna.consistency.variants import assign_variant
from caverna.prompting.params import ResolvedParams, stable_hash
from caverna.prompting.spec import PromptSpec, Section, SectionKey, template_version

_MEMO_SIZE = 4096


def orientation(aspect_ratio: str) -> str:
    width, height = (int(part) for part in aspect_ratio.split(":"))
    if width == height:
        return "square"
    return "vertical" if height > width else "horizontal"


def color_words(name: str) -> str:
    return name.replace("_", " ")


def _section(key: SectionKey, label: str, *sentences: str) -> Section:
    return Section(key, label, tuple(s for s in sentences if s))


@lru_cache(maxsize=64)
def foundation_sections(pack: BrandPack) -> dict[SectionKey, Section]:
    """The sections every image of the pack shares, whatever the user picks."""
    foundation = pack.model.foundation
    character = foundation.character
    technical = foundation.technical
    environment = foundation.environment
    palette = ", ".join(color_words(c.name) for c in technical.palette)
    lighting = technical.lighting
    sections = [
        _section(SectionKey.SUBJECT, "Character", character.identity),
        _section(
            SectionKey.SIGNATURE,
            "Signature marks, identical in every image",
            *(mark.prompt for mark in character.signature_marks),
        ),
        _section(
            SectionKey.BODY,
            "Body",
            character.proportions.prompt,
            character.proportions.build,
            character.face,
            character.hair,
            character.eyes,
            character.skin,
            *character.accessories,
        ),
        _section(
            SectionKey.ENVIRONMENT,
            "Environment",
            environment.prompt,
            *environment.elements,
            environment.mood,
        ),
        _section(
            SectionKey.LIGHTING,
            "Lighting",
            lighting.prompt,
            lighting.key,
            lighting.fill,
            f"colour temperature around {lighting.color_temperature_k} K",
        ),
        _section(
            SectionKey.STYLE,
            "Style",
            technical.render_style,
            technical.camera.prompt,
            f"{technical.camera.lens_mm}mm lens at {technical.camera.aperture}",
            f"colour palette of {palette}",
            ", ".join(technical.quality_terms),
        ),
        _section(SectionKey.SAFEGUARDS, "Anatomy", *foundation.safeguards.rules),
    ]
    return {section.key: section for section in sections}


@lru_cache(maxsize=_MEMO_SIZE)
def option_section(pack: BrandPack, kind: OptionKind, option_id: str) -> Section:
    if kind == "pose":
        pose = pack.poses[option_id]
        expression = pose.expression or pack.model.foundation.character.default_expression
        return _section(SectionKey.POSE, "Pose", pose.prompt, f"expression: {expression}")
    if kind == "outfit":
        return _section(SectionKey.OUTFIT, "Outfit", pack.outfits[option_id].prompt)
    return _section(SectionKey.FOOTWEAR, "Footwear", pack.footwear[option_id].prompt)


@lru_cache(maxsize=_MEMO_SIZE)
def props_section(pack: BrandPack, props: tuple[str, ...]) -> Section:
    return _section(
        SectionKey.PROPS,
        "Props",
        *(f"{pack.props[p].prompt.rstrip('. ')}, {pack.props[p].scale}" for p in props),
    )


@lru_cache(maxsize=_MEMO_SIZE)
def frame_sections(pack: BrandPack, frame_ref: str) -> dict[SectionKey, Section]:
    frame = pack.frames[frame_ref].frame
    sections = [
        _section(SectionKey.SCENE, "Scene", frame.prompt),
        _section(
            SectionKey.LIGHTING,
            "Lighting",
            frame.lighting.prompt,
            f"colour temperature around {frame.lighting.color_temperature_k} K, "
            f"{frame.lighting.mood} mood",
        ),
        _section(SectionKey.CONTINUITY, "Continuity", *frame.continuity),
    ]
    return {section.key: section for section in sections if section.sentences}


@lru_cache(maxsize=_MEMO_SIZE)
def composition_section(pack: BrandPack, frame_ref: str | None, aspect_ratio: str) -> Section:
    ratio = f"{orientation(aspect_ratio)} {aspect_ratio} composition"
    if frame_ref is None:
        return _section(SectionKey.COMPOSITION, "Composition", ratio)
    frame = pack.frames[frame_ref].frame
    return _section(
        SectionKey.COMPOSITION,
        "Composition",
        frame.shot.prompt,
        frame.position.prompt,
        frame.text_space.prompt,
        ratio,
    )


@lru_cache(maxsize=_MEMO_SIZE)
def negative_terms(
    pack: BrandPack, refs: tuple[str, ...], frame_ref: str | None
) -> tuple[str, ...]:
    """Global negatives, then the safeguards', the chosen options' and the frame's; no repeats."""
    foundation = pack.model.foundation
    terms = [*foundation.negative_prompt, *foundation.safeguards.negative]
    for ref in refs:
        terms.extend(pack.by_ref[ref].negative)
    if frame_ref is not None:
        terms.extend(pack.frames[frame_ref].frame.negative)
    seen: set[str] = set()
    kept: list[str] = []
    for term in terms:
        key = term.lower()
        if key not in seen:
            seen.add(key)
            kept.append(term)
    return tuple(kept)


def variant_for(pack: BrandPack, params: ResolvedParams) -> str | None:
    """The A/B variant a job gets: a hash of its canonical params and seed (None: no variants)."""
    declared = pack.model.foundation.variants
    if declared is None:
        return None
    choices = tuple((option.id, option.weight) for option in declared.options)
    return assign_variant(params.canonical(), params.seed, choices, salt=declared.section)


@lru_cache(maxsize=_MEMO_SIZE)
def variant_sections(pack: BrandPack, variant: str) -> dict[SectionKey, Section]:
    """The foundation sections with the declared section's text replaced by `variant`'s."""
    base = foundation_sections(pack)
    declared = pack.model.foundation.variants
    option = next((o for o in declared.options if o.id == variant), None) if declared else None
    if declared is None or option is None or not option.sentences:
        return base
    key = SectionKey(declared.section)
    return {**base, key: _section(key, base[key].label, *option.sentences)}


def build_spec(pack: BrandPack, params: ResolvedParams) -> PromptSpec:
    variant = variant_for(pack, params)
    base = foundation_sections(pack) if variant is None else variant_sections(pack, variant)
    frame = frame_sections(pack, params.frame) if params.frame else {}
    sections = [
        base[SectionKey.SUBJECT],
        base[SectionKey.SIGNATURE],
        base[SectionKey.BODY],
        option_section(pack, "pose", params.pose),
        option_section(pack, "outfit", params.outfit),
        option_section(pack, "footwear", params.footwear),
    ]
    if params.props:
        sections.append(props_section(pack, params.props))
    if SectionKey.SCENE in frame:
        sections.append(frame[SectionKey.SCENE])
    sections.append(composition_section(pack, params.frame, params.aspect_ratio))
    sections.append(base[SectionKey.ENVIRONMENT])
    sections.append(frame.get(SectionKey.LIGHTING, base[SectionKey.LIGHTING]))
    if SectionKey.CONTINUITY in frame:
        sections.append(frame[SectionKey.CONTINUITY])
    sections.append(base[SectionKey.STYLE])
    if params.scene_notes:
        sections.append(_section(SectionKey.NOTES, "Art direction notes", params.scene_notes))
    sections.append(base[SectionKey.SAFEGUARDS])

    refs = (
        f"pose:{params.pose}",
        f"outfit:{params.outfit}",
        f"footwear:{params.footwear}",
        *(f"prop:{p}" for p in params.props),
    )
    canonical = params.canonical()
    return PromptSpec(
        pack=pack,
        params=params,
        canonical_params=canonical,
        params_hash=stable_hash(canonical),
        template_version=template_version(pack),
        frame=pack.frames[params.frame] if params.frame else None,
        sections=tuple(sections),
        must_keep=tuple(pack.model.foundation.character.must_never_change),
        negative=negative_terms(pack, refs, params.frame),
        variant=variant,
    )
