"""Brand consistency over HTTP: an image's review and re-rolls, a storyboard's continuity report
and contact sheet, and the approval analytics per template, provider, pose, frame and variant."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from caverna.api.deps import Admin, Caller, State
from caverna.api.problems import ApiProblem, Responses, documented, not_found
from caverna.api.schemas import (
    Rerolls,
    ReviewOut,
    ReviewRequest,
    SequenceReportOut,
    TemplateGroup,
    TemplateReport,
)
from caverna.api.state import ApiState
from caverna.consistency.analytics import GROUP_FIELDS, GroupField
from caverna.domain.accounts import Principal
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.domain.problems import ProblemCode
from caverna.services.consistency import RerollPolicy
from caverna.services.consistency_reports import (
    REVIEW_REASONS,
    SequenceReport,
    group_dict,
    parse_group_by,
    reroll_summary,
    sequence_report,
    sequence_sheet,
    template_chart,
    template_report,
)
from caverna.services.image_actions import ImageNotFound, can_see

router = APIRouter(prefix="/api/v1", tags=["consistency"])

PNG: Responses = {200: {"content": {"image/png": {}}, "description": "A PNG image"}}
NO_IMAGE = documented(s404="No such image visible to the caller")
NO_SEQUENCE = documented(s404="No such sequence visible to the caller")


async def _visible(state: ApiState, caller: Principal, image_id: uuid.UUID) -> ImageJob:
    try:
        return await state.actions.visible(caller, image_id)
    except ImageNotFound:
        raise not_found() from None


def _review_view(job_id: uuid.UUID, review: dict[str, object] | None) -> ReviewOut:
    found = review or {}
    return ReviewOut.model_validate(
        {
            "image_id": job_id,
            "review_status": found.get("review_status"),
            "review_reason": found.get("review_reason"),
            "review_note": found.get("review_note"),
            "reviewed_by": found.get("reviewed_by"),
            "reviewed_at": found.get("reviewed_at"),
            "reasons": list(REVIEW_REASONS),
        }
    )


@router.get("/images/{image_id}/review", responses=NO_IMAGE, tags=["images"])
async def get_review(image_id: uuid.UUID, state: State, caller: Caller) -> ReviewOut:
    """The image's review (all fields None until someone reviews it) and the allowed reasons."""
    job = await _visible(state, caller, image_id)
    return _review_view(job.id, await state.runtime.jobs.review(job.id))


@router.put(
    "/images/{image_id}/review",
    tags=["images"],
    responses=documented(
        s404="No such image visible to the caller",
        s409="Only a completed image can be reviewed",
        s422="Unknown verdict or reason, a rejection without its reason, or a note too long",
    ),
)
async def put_review(
    image_id: uuid.UUID, body: ReviewRequest, state: State, caller: Caller
) -> ReviewOut:
    """Approve or reject a completed image. A rejection needs a reason from the list; a note is
    free text. Reviewing again replaces the earlier verdict."""
    job = await _visible(state, caller, image_id)
    if body.verdict == "rejected" and body.reason is None:
        raise ApiProblem(
            422,
            "invalid_request",
            "a rejection needs its reason",
            errors=[
                {
                    "code": "reason_required",
                    "field": "reason",
                    "message": "choose the reason for rejecting the image",
                    "allowed": list(REVIEW_REASONS),
                }
            ],
        )
    if job.status is not JobStatus.COMPLETED:
        raise ApiProblem(409, "not_completed", f"the image is {job.status.value}, not completed")
    reason = body.reason if body.verdict == "rejected" else None
    stored = await state.runtime.jobs.set_review(
        job.id, body.verdict, reason, body.note or None, caller.user_id
    )
    if not stored:  # deleted meanwhile
        raise not_found()
    return _review_view(job.id, await state.runtime.jobs.review(job.id))


def _policy(state: ApiState) -> RerollPolicy:
    consistency = state.runtime.consistency
    if consistency is not None and consistency.rerolls is not None:
        return consistency.rerolls.policy
    settings = state.runtime.settings
    return RerollPolicy(
        settings.reroll_below, settings.reroll_max_attempts, settings.reroll_budget_usd
    )


@router.get("/images/{image_id}/rerolls", responses=NO_IMAGE, tags=["images"])
async def list_rerolls(image_id: uuid.UUID, state: State, caller: Caller) -> Rerolls:
    """Every re-roll of the image (asked of a re-roll: of its original), with scores and cost."""
    job = await _visible(state, caller, image_id)
    original = job
    if job.reroll_of is not None:
        found = await state.runtime.jobs.get(job.reroll_of)
        original = found if found is not None and can_see(caller, found) else job
    summary = await reroll_summary(state.runtime.jobs, original, _policy(state))
    return Rerolls.model_validate(summary)


async def _sequence(
    state: ApiState, caller: Principal, sequence_id: uuid.UUID, locale: str
) -> tuple[SequenceReport, list[ImageJob]]:
    jobs = await state.runtime.jobs.for_sequence(sequence_id)
    if not jobs or not all(can_see(caller, job) for job in jobs):
        raise not_found("sequence")
    return sequence_report(sequence_id, jobs, state.runtime.container.packs, locale), jobs


Locale = Annotated[Literal["en", "pt-BR"], Query(description="Language of the frame titles")]


@router.get("/sequences/{sequence_id}/report", responses=NO_SEQUENCE, tags=["sequences"])
async def get_sequence_report(
    sequence_id: uuid.UUID, state: State, caller: Caller, locale: Locale = "en"
) -> SequenceReportOut:
    """Palette and brightness drift between consecutive frames, and the frames that break
    continuity (see docs/consistency.md), over the run's current frames."""
    report, _ = await _sequence(state, caller, sequence_id, locale)
    return SequenceReportOut.model_validate(report.to_dict())


@router.get(
    "/sequences/{sequence_id}/report.png",
    response_class=Response,
    responses={**PNG, **NO_SEQUENCE},
    tags=["sequences"],
)
async def get_sequence_sheet(
    sequence_id: uuid.UUID, state: State, caller: Caller, locale: Locale = "en"
) -> Response:
    """The contact sheet: each frame with its overall, palette and light scores and the ΔE from
    the frame before; frames that break continuity are outlined in red."""
    report, jobs = await _sequence(state, caller, sequence_id, locale)
    data = await sequence_sheet(report, jobs, state.runtime.store)
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


GroupBy = Annotated[
    str | None,
    Query(
        max_length=100,
        description="Comma-separated fields to group by: template_version, provider, pose,"
        " frame, variant (default: all of them)",
    ),
]
ReportFormat = Annotated[Literal["json", "png"], Query(description="png: the chart")]


def _group_by(text: str | None) -> tuple[GroupField, ...]:
    try:
        return parse_group_by(text)
    except ValueError as exc:
        raise ApiProblem(
            422,
            "invalid_request",
            str(exc),
            errors=[
                {
                    "code": ProblemCode.INVALID_CHOICE,
                    "field": "by",
                    "message": str(exc),
                    "allowed": list(GROUP_FIELDS),
                }
            ],
        ) from None


ADMIN_ONLY = documented(s403="Admins only", s422="Unknown group-by field")


@router.get(
    "/admin/reports/templates",
    tags=["admin"],
    response_model=TemplateReport,
    responses={200: {"content": {"image/png": {}}}, **ADMIN_ONLY},
)
async def get_template_report(
    state: State, _admin: Admin, by: GroupBy = None, format: ReportFormat = "json"
) -> Response | TemplateReport:
    """Approval rate with its Wilson 95% interval, and the mean consistency score, per
    template_version x provider x pose x frame x variant (or the fields of `by`)."""
    fields = _group_by(by)
    stats = await template_report(state.runtime.jobs, fields)
    if format == "png":
        data = await template_chart(stats)
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})
    return TemplateReport(
        by=list(fields),
        groups=[TemplateGroup.model_validate(group_dict(s, fields)) for s in stats],
    )


@router.get(
    "/admin/reports/templates.png",
    response_class=Response,
    tags=["admin"],
    responses={**PNG, **ADMIN_ONLY},
)
async def get_template_chart(state: State, _admin: Admin, by: GroupBy = None) -> Response:
    """The same report as a chart: a bar per group with its interval and the mean score."""
    stats = await template_report(state.runtime.jobs, _group_by(by))
    data = await template_chart(stats)
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})
