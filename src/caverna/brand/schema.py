"""The brand pack format: what a brand team writes in YAML, validated strictly.

Every model forbids unknown keys, so a typo in a pack file is an error with a path, not a silently
ignored setting. Prompt text is English (the models read English); labels and descriptions are
bilingual because the people choosing options read Portuguese first.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
)

Locale = Literal["pt-BR", "en"]
LOCALES: tuple[Locale, ...] = ("pt-BR", "en")

OptionKind = Literal["pose", "outfit", "footwear", "prop"]
OPTION_KINDS: tuple[OptionKind, ...] = ("pose", "outfit", "footwear", "prop")

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, min_length=1, max_length=48)]
ColorName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)]
HexColor = Annotated[str, StringConstraints(pattern=r"^#[0-9A-Fa-f]{6}$")]
AspectRatio = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]?:[1-9][0-9]?$")]
SemVer = Annotated[
    str,
    StringConstraints(pattern=r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$"),
]
_MIDJOURNEY_SYNTAX = re.compile(r"--|::")


def _no_prompt_syntax(text: str) -> str:
    """Pack prose must not smuggle provider syntax; the engine adds weights and flags itself."""
    if _MIDJOURNEY_SYNTAX.search(text):
        raise ValueError("prompt text must not contain '--' or '::' (provider parameter syntax)")
    if any(ch in text for ch in "()[]{}<>|\\"):
        raise ValueError("prompt text must not contain brackets, '|' or '\\' (weight syntax)")
    return text


def _no_comma(text: str) -> str:
    """Terms are joined with commas in every dialect (and after Midjourney's --no)."""
    if "," in text:
        raise ValueError("a term must not contain ',' (write two terms instead)")
    return text


PromptText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=1500),
    AfterValidator(_no_prompt_syntax),
]
Term = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=2, max_length=120),
    AfterValidator(_no_prompt_syntax),
    AfterValidator(_no_comma),
]
# "kind:id", e.g. "prop:torch"; resolved against the catalog after loading.
OptionRef = Annotated[
    str, StringConstraints(pattern=r"^(pose|outfit|footwear|prop):[a-z0-9]+(?:-[a-z0-9]+)*$")
]
# "sequence/frame", e.g. "onboarding/lighting-the-torch".
FrameRef = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*/[a-z0-9]+(?:-[a-z0-9]+)*$")
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Labels(StrictModel):
    """A short text in both of the product's languages."""

    pt_br: str = Field(alias="pt-BR", min_length=1, max_length=400)
    en: str = Field(min_length=1, max_length=400)

    def get(self, locale: Locale) -> str:
        return self.pt_br if locale == "pt-BR" else self.en


class PackManifest(StrictModel):
    """`pack.yaml`: who the pack is and which version of it this is."""

    id: Slug
    pack_version: SemVer
    labels: Labels
    description: Labels
    default_locale: Locale = "pt-BR"
    reference_image_url: str | None = Field(
        default=None,
        pattern=r"^https://[^\s]+$",
        description="Public HTTPS image of the character: Midjourney's character reference.",
    )


# --- foundation ---------------------------------------------------------------------------------


class WeightedTrait(StrictModel):
    """A trait that must survive every generation; SD dialects give it extra attention weight."""

    term: Term
    weight: float = Field(default=1.2, ge=1.0, le=1.6)


class SignatureMark(StrictModel):
    id: Slug
    description: Labels
    prompt: PromptText


class Proportions(StrictModel):
    head_heights: float = Field(ge=2.0, le=8.5, description="Total height measured in heads.")
    build: PromptText
    prompt: PromptText


class Character(StrictModel):
    name: str = Field(min_length=1, max_length=80)
    identity: PromptText
    personality: PromptText
    proportions: Proportions
    face: PromptText
    hair: PromptText
    eyes: PromptText
    skin: PromptText
    signature_marks: list[SignatureMark] = Field(min_length=1, max_length=6)
    accessories: list[PromptText] = Field(default_factory=list, max_length=8)
    expression_range: list[Term] = Field(min_length=1, max_length=16)
    default_expression: Term
    must_never_change: list[WeightedTrait] = Field(min_length=1, max_length=12)


class Environment(StrictModel):
    name: Labels
    prompt: PromptText
    elements: list[PromptText] = Field(min_length=1, max_length=12)
    mood: PromptText


class Camera(StrictModel):
    lens_mm: int = Field(ge=8, le=400)
    aperture: str = Field(pattern=r"^f/\d+(\.\d+)?$")
    prompt: PromptText


class DefaultLighting(StrictModel):
    key: PromptText
    fill: PromptText
    color_temperature_k: int = Field(ge=1000, le=12000)
    prompt: PromptText


class PaletteColor(StrictModel):
    name: ColorName
    hex: HexColor
    role: PromptText


class OpenAIDefaults(StrictModel):
    model: str = Field(default="gpt-image-2", min_length=1, max_length=64)
    quality: Literal["low", "medium", "high", "auto"] = "high"
    output_format: Literal["png", "jpeg", "webp"] = "webp"


class StabilityDefaults(StrictModel):
    endpoint: Literal["core", "ultra", "sd3"] = "core"
    model: str | None = Field(default=None, max_length=64, description="sd3 endpoint only.")
    style_preset: (
        Literal[
            "3d-model",
            "analog-film",
            "anime",
            "cinematic",
            "comic-book",
            "digital-art",
            "enhance",
            "fantasy-art",
            "isometric",
            "line-art",
            "low-poly",
            "modeling-compound",
            "neon-punk",
            "origami",
            "photographic",
            "pixel-art",
            "tile-texture",
        ]
        | None
    ) = "3d-model"
    output_format: Literal["png", "jpeg", "webp"] = "webp"


class MidjourneyDefaults(StrictModel):
    version: str = Field(default="7", pattern=r"^\d+(\.\d+)?$")
    stylize: int = Field(default=100, ge=0, le=1000)
    style_raw: bool = True
    reference_weight: int = Field(default=100, ge=0, le=1000)


class SDWebUIDefaults(StrictModel):
    sampler: str = Field(default="DPM++ 2M", min_length=1, max_length=64)
    scheduler: str | None = Field(default="Karras", max_length=64)
    steps: int = Field(default=30, ge=1, le=150)
    cfg_scale: float = Field(default=6.5, ge=1.0, le=30.0)
    checkpoint: str | None = Field(default=None, max_length=200)


class ComfyUIDefaults(StrictModel):
    checkpoint: str = Field(default="sd_xl_base_1.0.safetensors", min_length=1, max_length=200)
    sampler_name: str = Field(default="dpmpp_2m", min_length=1, max_length=64)
    scheduler: str = Field(default="karras", min_length=1, max_length=64)
    steps: int = Field(default=30, ge=1, le=150)
    cfg: float = Field(default=6.5, ge=0.0, le=30.0)
    filename_prefix: str = Field(default="caverna", pattern=r"^[A-Za-z0-9_\-/]{1,80}$")


class ProviderDefaults(StrictModel):
    openai: OpenAIDefaults = OpenAIDefaults()
    stability: StabilityDefaults = StabilityDefaults()
    midjourney: MidjourneyDefaults = MidjourneyDefaults()
    sdwebui: SDWebUIDefaults = SDWebUIDefaults()
    comfyui: ComfyUIDefaults = ComfyUIDefaults()


class Technical(StrictModel):
    render_style: PromptText
    quality_terms: list[Term] = Field(default_factory=list, max_length=12)
    camera: Camera
    lighting: DefaultLighting
    palette: list[PaletteColor] = Field(min_length=3, max_length=16)
    aspect_ratios: list[AspectRatio] = Field(min_length=1, max_length=12)
    default_aspect_ratio: AspectRatio
    megapixels: float = Field(default=1.0, ge=0.25, le=4.0, description="Pixel budget per image.")
    providers: ProviderDefaults = ProviderDefaults()


class Safeguards(StrictModel):
    """Anatomy rules stated positively, and the failures they guard against as negatives."""

    rules: list[PromptText] = Field(min_length=1, max_length=16)
    negative: list[Term] = Field(min_length=1, max_length=40)


def _has_word(text: str) -> str:
    """A term of punctuation only would match nothing (matching is by whole words)."""
    if not any(ch.isalnum() for ch in text):
        raise ValueError("a blocked term needs at least one letter or digit")
    return text


BlockedTerm = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=2, max_length=80),
    AfterValidator(_has_word),
]


class Safety(StrictModel):
    """Words users may not put in free-text fields (scene notes), whatever the image model.

    It is input policy, not part of any prompt: it is left out of the pack's content hash, so
    editing the list changes no compiled prompt and no template_version.
    """

    blocked_terms: list[BlockedTerm] = Field(default_factory=list, max_length=500)


# Foundation sections present in every prompt; lighting is left out because a frame replaces it.
VariantSection = Literal["subject", "signature", "body", "environment", "style", "safeguards"]
VARIANT_SECTIONS: tuple[VariantSection, ...] = (
    "subject",
    "signature",
    "body",
    "environment",
    "style",
    "safeguards",
)


class PromptVariant(StrictModel):
    """One arm of an A/B test: the section's text for jobs assigned to it."""

    id: Annotated[str, StringConstraints(pattern=SLUG_PATTERN, min_length=1, max_length=16)]
    weight: float = Field(default=1.0, gt=0.0, le=100.0, description="Relative share of jobs.")
    sentences: list[PromptText] = Field(
        default_factory=list,
        max_length=12,
        description="Replace the section's sentences; empty keeps the section as written.",
    )


class SectionVariants(StrictModel):
    """Alternative texts for one foundation section, assigned to jobs by a hash of their params."""

    section: VariantSection
    options: list[PromptVariant] = Field(min_length=2, max_length=8)

    @field_validator("options")
    @classmethod
    def _unique_ids(cls, options: list[PromptVariant]) -> list[PromptVariant]:
        ids = [option.id for option in options]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"variant ids must be unique; repeated: {', '.join(repeated)}")
        return options


class Foundation(StrictModel):
    """`foundation.yaml`: what is true in every image of the pack."""

    character: Character
    environment: Environment
    technical: Technical
    safeguards: Safeguards
    negative_prompt: list[Term] = Field(min_length=1, max_length=60)
    safety: Safety = Safety()
    variants: SectionVariants | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_variants(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A pack without variants dumps (and so hashes) exactly as before variants existed."""
        data = handler(self)
        if self.variants is None and isinstance(data, dict):
            data.pop("variants", None)
        return data


# --- catalog ------------------------------------------------------------------------------------


class CatalogOption(StrictModel):
    id: Slug
    labels: Labels
    description: Labels
    prompt: PromptText
    negative: list[Term] = Field(default_factory=list, max_length=12)
    tags: list[Slug] = Field(default_factory=list, max_length=12)
    excludes: list[OptionRef] = Field(default_factory=list, max_length=24)
    requires: list[OptionRef] = Field(default_factory=list, max_length=6)
    only_in_frames: list[FrameRef] = Field(default_factory=list, max_length=16)
    color: ColorName | None = Field(
        default=None, description="The palette colour this option contributes most of."
    )


class Pose(CatalogOption):
    free_hands: int = Field(ge=0, le=2, description="Hands the pose leaves free to hold props.")
    expression: Term | None = None


class Outfit(CatalogOption):
    pass


class Footwear(CatalogOption):
    pass


class Prop(CatalogOption):
    hands: int = Field(ge=0, le=2, description="Hands the prop occupies; 0 when worn or set down.")
    scale: PromptText = Field(description="Size against the character, for consistent scale.")


class Catalog(StrictModel):
    """`catalog.yaml`: the options a user picks from."""

    max_props: int = Field(default=2, ge=0, le=2)
    poses: list[Pose] = Field(min_length=1)
    outfits: list[Outfit] = Field(min_length=1)
    footwear: list[Footwear] = Field(min_length=1)
    props: list[Prop] = Field(default_factory=list)


# --- sequences ----------------------------------------------------------------------------------

ShotType = Literal[
    "extreme-wide", "wide", "full", "medium-wide", "medium", "medium-close", "close-up"
]
CameraAngle = Literal["eye-level", "low", "high", "overhead", "over-the-shoulder", "dutch"]
Placement = Literal["left-third", "center", "right-third"]
Facing = Literal["left", "right", "viewer", "away", "three-quarter-left", "three-quarter-right"]
LightSide = Literal["left", "right", "front", "back", "top"]
TextSide = Literal["top", "bottom", "left", "right", "none"]


class Shot(StrictModel):
    type: ShotType
    angle: CameraAngle
    prompt: PromptText


class Position(StrictModel):
    placement: Placement
    facing: Facing
    height_fraction: float = Field(ge=0.1, le=1.0, description="Character height / frame height.")
    prompt: PromptText


class FrameLighting(StrictModel):
    key_side: LightSide
    color_temperature_k: int = Field(ge=1000, le=12000)
    mood: Term
    prompt: PromptText


class TextSpace(StrictModel):
    side: TextSide
    prompt: PromptText


class FrameDefaults(StrictModel):
    pose: Slug
    outfit: Slug
    footwear: Slug
    props: list[Slug] = Field(default_factory=list, max_length=2)
    aspect_ratio: AspectRatio | None = None


class Frame(StrictModel):
    id: Slug
    title: Labels
    beat: Labels
    prompt: PromptText
    shot: Shot
    position: Position
    lighting: FrameLighting
    text_space: TextSpace
    defaults: FrameDefaults
    required: list[OptionRef] = Field(default_factory=list, max_length=8)
    forbidden: list[OptionRef] = Field(default_factory=list, max_length=24)
    continuity: list[PromptText] = Field(default_factory=list, max_length=8)
    negative: list[Term] = Field(default_factory=list, max_length=12)


class Sequence(StrictModel):
    """`sequences/<id>.yaml`: an ordered storyboard."""

    id: Slug
    labels: Labels
    description: Labels
    frames: list[Frame] = Field(min_length=1, max_length=24)


class BrandPackModel(StrictModel):
    """The whole pack as one validated document (assembled from its files by the loader)."""

    manifest: PackManifest
    foundation: Foundation
    catalog: Catalog
    sequences: list[Sequence] = Field(default_factory=list)
