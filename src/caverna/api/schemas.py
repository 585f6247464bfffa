"""Request and response bodies: the OpenAPI contract of the API.

Generation parameters keep the engine's own rules (strict types, unknown fields rejected); the
engine validates references and combinations afterwards, so every rejection carries the same
stable codes whichever layer caught it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from caverna.brand.schema import Locale
from caverna.domain.accounts import Role
from caverna.prompting.params import MAX_PROPS_ACCEPTED, MAX_SEED, SCENE_NOTES_MAX, clean_text
from caverna.services.consistency_reports import NOTE_MAX, ReviewReason, ReviewVerdict
from caverna.services.webhooks import MAX_URL_LENGTH

OptionId = Annotated[str, Field(min_length=1, max_length=64)]
ProviderName = Annotated[str, Field(min_length=1, max_length=32, examples=["preview"])]
# the length is documented here but checked with the rest of the URL, so that every refusal of
# a callback URL carries the same code (invalid_callback_url)
CallbackUrl = Annotated[
    str,
    Field(
        json_schema_extra={"maxLength": MAX_URL_LENGTH},
        examples=["https://hooks.example.com/caverna"],
    ),
]


class ImageParameters(BaseModel):
    """The parameters of one image; unset options fall back to the frame's, then the pack's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pack: OptionId | None = Field(default=None, examples=["capitao-caverna"])
    pose: OptionId | None = Field(default=None, examples=["arms-crossed-confident"])
    outfit: OptionId | None = None
    footwear: OptionId | None = None
    props: list[OptionId] | None = Field(default=None, max_length=MAX_PROPS_ACCEPTED)
    frame: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    aspect_ratio: Annotated[str, Field(min_length=1, max_length=16)] | None = Field(
        default=None, examples=["1:1"]
    )
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    locale: Locale | None = None
    scene_notes: Annotated[str, Field(max_length=SCENE_NOTES_MAX)] | None = None

    def engine_params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, include=set(ImageParameters.model_fields))


class GenerateRequest(ImageParameters):
    provider: ProviderName | None = None
    force: bool = Field(
        default=False, description="Make a new image even if an identical one exists."
    )
    callback_url: CallbackUrl | None = Field(
        default=None,
        description="Receives a signed POST when the image completes, fails or is cancelled.",
    )


class SequenceRequest(BaseModel):
    """A whole storyboard; pose, props and frame belong to each frame and cannot be shared."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sequence: Annotated[str, Field(min_length=1, max_length=64)] = Field(examples=["onboarding"])
    pack: OptionId | None = None
    outfit: OptionId | None = None
    footwear: OptionId | None = None
    aspect_ratio: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    locale: Locale | None = None
    scene_notes: Annotated[str, Field(max_length=SCENE_NOTES_MAX)] | None = None
    provider: ProviderName | None = None
    callback_url: CallbackUrl | None = Field(
        default=None, description="Receives a signed POST for each frame's image once it is final."
    )

    def shared_params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"sequence", "provider", "callback_url"})


class PreviewRequest(ImageParameters):
    providers: list[ProviderName] | None = Field(
        default=None, max_length=8, description="Dialects to compile for; default: every one."
    )


class RegenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    seed: Literal["same", "new"] | Annotated[int, Field(ge=0, le=MAX_SEED)] = "new"


class ErrorInfo(BaseModel):
    code: str
    message: str


class Accepted(BaseModel):
    image_id: uuid.UUID
    status: str
    status_url: str
    events_url: str
    reused: bool = Field(description="True when an identical earlier request's image is returned.")


class ImageStatus(BaseModel):
    image_id: uuid.UUID
    status: str
    progress: float = Field(ge=0.0, le=1.0)
    eta_seconds: float | None
    url: str | None = None
    thumbnail_url: str | None = None
    error: ErrorInfo | None = None
    attempts: int
    provider: str
    updated_at: datetime


class ImageDetail(BaseModel):
    image_id: uuid.UUID
    user_id: str
    status: str
    progress: float
    params: dict[str, Any]
    pack_id: str
    pack_version: str
    template_version: str
    sequence_id: uuid.UUID | None
    frame_id: str | None
    provider: str
    model: str | None
    seed: int | None
    prompt: str | None
    negative_prompt: str | None
    url: str | None
    thumbnail_url: str | None
    content_type: str | None
    width: int | None
    height: int | None
    bytes: int | None
    sha256: str | None
    cost_usd: float | None
    provider_latency_ms: float | None
    attempts: int
    attempt_log: list[dict[str, Any]]
    error: ErrorInfo | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    # brand consistency (None until the post-completion pass has run), the prompt variant, and
    # the image this one re-rolls (None for an original)
    consistency: Consistency | None = None
    variant: str | None = None
    reroll_of: uuid.UUID | None = None
    reroll_attempt: int | None = None


class ImageList(BaseModel):
    items: list[ImageDetail]
    next_cursor: str | None
    next_url: str | None


class SequenceFrame(BaseModel):
    frame_id: str | None
    image_id: uuid.UUID
    status: str
    progress: float
    url: str | None


class SequenceStatus(BaseModel):
    sequence_id: uuid.UUID
    status: str
    progress: float
    frames: list[SequenceFrame]
    image_ids: list[uuid.UUID]


class CompiledPreview(BaseModel):
    provider: str
    prompt: str
    negative_prompt: str | None
    payload: dict[str, Any]
    template_version: str
    params_hash: str


class PreviewResult(BaseModel):
    valid: bool
    errors: list[dict[str, Any]]
    compiled: list[CompiledPreview]


class ProviderHealth(BaseModel):
    provider: str
    healthy: bool | None = Field(description="None: no cheap probe, judged from outcomes.")
    breaker: str
    detail: str


class ShareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    expires_in_seconds: Annotated[int, Field(ge=60, le=90 * 24 * 3600)] = 7 * 24 * 3600


class ShareLink(BaseModel):
    share_id: uuid.UUID
    image_id: uuid.UUID
    url: str | None = Field(description="Only in the answer that created the link.")
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class ProblemEntry(BaseModel):
    code: str
    field: str
    message: str
    allowed: list[str] | None = None
    suggestion: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details with a stable `code` and per-field `errors`."""

    type: str
    title: str
    status: int
    code: str = Field(examples=["invalid_parameters"])
    detail: str
    errors: list[ProblemEntry] | None = None
    request_id: str | None = Field(None, description="As in the X-Request-Id header")


class UserOut(BaseModel):
    user_id: str
    role: str
    display_name: str
    created_at: datetime
    disabled_at: datetime | None
    quota_daily_images: int | None
    quota_monthly_usd: float | None


class KeyOut(BaseModel):
    key_id: uuid.UUID
    user_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(BaseModel):
    key: KeyOut
    token: str = Field(description="The API key itself: shown in this answer only.")
    user_created: bool


class NewKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # strict mode takes only Role instances, and a JSON body carries the string value
    role: Annotated[Role, Field(strict=False)] | None = None
    name: Annotated[str, Field(max_length=100)] = ""


class QuotaRequest(BaseModel):
    # strict like the other bodies: "12", true or 1.0 for a count is a client's mistake
    model_config = ConfigDict(extra="forbid", strict=True)

    daily_images: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    monthly_usd: Annotated[float, Field(ge=0, le=10_000_000)] | None = None


class UserStateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    disabled: bool


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class BulkRequest(BaseModel):
    """Every image matching `filters` (the history filters, plus `user`; none: everyone's)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    action: Annotated[str, Field(max_length=16, examples=["delete", "regenerate"])]
    filters: dict[Annotated[str, Field(max_length=32)], Annotated[str, Field(max_length=200)]] = (
        Field(default_factory=dict, max_length=16, examples=[{"user": "ana", "pose": "training"}])
    )


class BulkStatus(BaseModel):
    operation_id: uuid.UUID
    action: str
    filters: dict[str, Any]
    status: str
    progress: float
    total: int
    done: int
    failed: int
    error: str | None
    actor: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# -- brand consistency: reports, reviews, re-rolls ----------------------------------------------


class Consistency(BaseModel):
    """An image's consistency report (see docs/consistency.md): the overall score (0-1, None
    when every check was skipped), the worst check's status, and the full report."""

    score: float | None
    status: str
    report: dict[str, Any]


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: ReviewVerdict
    # required to reject, ignored when approving
    reason: ReviewReason | None = None
    note: Annotated[str, Field(max_length=NOTE_MAX), AfterValidator(clean_text)] | None = None


class ReviewOut(BaseModel):
    image_id: uuid.UUID
    review_status: str | None
    review_reason: str | None
    review_note: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    reasons: list[str]


class RerollAttempt(BaseModel):
    image_id: uuid.UUID
    attempt: int | None
    status: str
    seed: int | None
    score: float | None
    cost_usd: float | None


class RerollPolicyOut(BaseModel):
    enabled: bool
    below: float | None
    max_attempts: int
    budget_usd: float


class Rerolls(BaseModel):
    original_id: uuid.UUID
    original_score: float | None
    attempts: list[RerollAttempt]
    spent_usd: float
    best_image_id: uuid.UUID | None
    policy: RerollPolicyOut


class SequenceReportFrame(BaseModel):
    frame_id: str
    image_id: uuid.UUID
    title: str
    status: str
    score: float | None
    consistency_status: str | None
    palette: float | None
    lighting: float | None
    brightness: float | None
    breaks: bool


class SequenceReportOut(BaseModel):
    sequence_id: uuid.UUID
    frames: list[SequenceReportFrame]
    analysed: int
    # the continuity report (transitions, outliers, breaks, reasons, thresholds); None until a
    # frame has a consistency report
    continuity: dict[str, Any] | None


class TemplateGroup(BaseModel):
    template_version: str | None = None
    provider: str | None = None
    pose: str | None = None
    frame: str | None = None
    variant: str | None = None
    count: int
    reviewed: int
    approved: int
    approval_rate: float | None
    interval: list[float] | None = Field(description="Wilson 95% interval of the approval rate")
    mean_score: float | None
    scored: int


class TemplateReport(BaseModel):
    by: list[str]
    groups: list[TemplateGroup]
