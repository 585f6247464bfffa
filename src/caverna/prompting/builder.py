"""Builds a PromptSpec from a pack and resolved parameters: pure, deterministic, no I/O."""

from __future__ import annotations

from caverna.brand.pack import BrandPack
from caverna.prompting.params import ResolvedParams
from caverna.prompting.spec import PromptSpec, Section, SectionKey, template_version


def orientation(aspect_ratio: str) -> str:
    width, height = (int(part) for part in aspect_ratio.split(":"))
    if width == height:
        return "square"
    return "vertical" if height > width else "horizontal"


def color_words(name: str) -> str:
    return name.replace("_", " ")


def build_spec(pack: BrandPack, params: ResolvedParams, params_hash: str) -> PromptSpec:
    foundation = pack.model.foundation
    character = foundation.character
    technical = foundation.technical
    environment = foundation.environment
    pose = pack.poses[params.pose]
    outfit = pack.outfits[params.outfit]
    footwear = pack.footwear[params.footwear]
    props = [pack.props[p] for p in params.props]
    entry = pack.frames[params.frame] if params.frame else None
    frame = entry.frame if entry else None

    def section(key: SectionKey, label: str, *sentences: str) -> Section:
        return Section(key, label, tuple(s for s in sentences if s))

    sections = [
        section(SectionKey.SUBJECT, "Character", character.identity),
        section(
            SectionKey.SIGNATURE,
            "Signature marks, identical in every image",
            *(mark.prompt for mark in character.signature_marks),
        ),
        section(
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
        section(
            SectionKey.POSE,
            "Pose",
            pose.prompt,
            f"expression: {pose.expression or character.default_expression}",
        ),
        section(SectionKey.OUTFIT, "Outfit", outfit.prompt),
        section(SectionKey.FOOTWEAR, "Footwear", footwear.prompt),
    ]
    if props:
        sentences = [f"{prop.prompt.rstrip('. ')}, {prop.scale}" for prop in props]
        sections.append(section(SectionKey.PROPS, "Props", *sentences))
    if frame is not None:
        sections.append(section(SectionKey.SCENE, "Scene", frame.prompt))
    composition = [
        f"{orientation(params.aspect_ratio)} {params.aspect_ratio} composition",
    ]
    if frame is not None:
        composition = [
            frame.shot.prompt,
            frame.position.prompt,
            frame.text_space.prompt,
            *composition,
        ]
    sections.append(section(SectionKey.COMPOSITION, "Composition", *composition))
    sections.append(
        section(
            SectionKey.ENVIRONMENT,
            "Environment",
            environment.prompt,
            *environment.elements,
            environment.mood,
        )
    )
    if frame is not None:
        lighting = [
            frame.lighting.prompt,
            f"colour temperature around {frame.lighting.color_temperature_k} K, "
            f"{frame.lighting.mood} mood",
        ]
    else:
        lighting = [
            technical.lighting.prompt,
            technical.lighting.key,
            technical.lighting.fill,
            f"colour temperature around {technical.lighting.color_temperature_k} K",
        ]
    sections.append(section(SectionKey.LIGHTING, "Lighting", *lighting))
    if frame is not None and frame.continuity:
        sections.append(section(SectionKey.CONTINUITY, "Continuity", *frame.continuity))
    palette = ", ".join(color_words(c.name) for c in technical.palette)
    sections.append(
        section(
            SectionKey.STYLE,
            "Style",
            technical.render_style,
            technical.camera.prompt,
            f"{technical.camera.lens_mm}mm lens at {technical.camera.aperture}",
            f"colour palette of {palette}",
            ", ".join(technical.quality_terms),
        )
    )
    if params.scene_notes:
        sections.append(section(SectionKey.NOTES, "Art direction notes", params.scene_notes))
    sections.append(section(SectionKey.SAFEGUARDS, "Anatomy", *foundation.safeguards.rules))

    negative_terms = [
        *foundation.negative_prompt,
        *foundation.safeguards.negative,
        *pose.negative,
        *outfit.negative,
        *footwear.negative,
        *(term for prop in props for term in prop.negative),
        *(frame.negative if frame else ()),
    ]
    return PromptSpec(
        pack=pack,
        params=params,
        params_hash=params_hash,
        template_version=template_version(pack),
        frame=entry,
        sections=tuple(sections),
        must_keep=tuple(character.must_never_change),
        negative=_dedupe(negative_terms),
    )


def _dedupe(terms: list[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    kept: list[str] = []
    for term in terms:
        key = term.lower()
        if key not in seen:
            seen.add(key)
            kept.append(term)
    return tuple(kept)
