"""Images: generate, follow (status and Server-Sent Events), read, list, cancel, delete, redo."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from caverna.api.deps import Caller, State, check_quota, check_safety
from caverna.api.objects import object_response
from caverna.api.problems import ApiProblem, documented, not_found
from caverna.api.schemas import (
    Accepted,
    Consistency,
    ErrorInfo,
    GenerateRequest,
    ImageDetail,
    ImageList,
    ImageStatus,
    RegenerateRequest,
    ShareLink,
    ShareRequest,
)
from caverna.api.state import ApiState
from caverna.domain.accounts import AuditAction, Principal, check_user_id
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.domain.problems import InvalidParametersError, ProblemsError
from caverna.services.idempotency import IdempotencyInProgress, IdempotencyKeyReused
from caverna.services.image_actions import ImageNotFound, ImageStateConflict
from caverna.services.sharing import ShareInfo

router = APIRouter(prefix="/api/v1/images", tags=["images"])

NOT_FOUND = documented(s404="No such image visible to the caller")


def _error(job: ImageJob) -> ErrorInfo | None:
    if job.error_code is None or job.status.value not in ("failed", "queued", "processing"):
        return None
    return ErrorInfo(code=job.error_code, message=job.error_message or "")


async def status_view(state: ApiState, job: ImageJob) -> ImageStatus:
    done = job.status.value == "completed"
    updated = job.completed_at or job.started_at or job.created_at
    return ImageStatus(
        image_id=job.id,
        status=job.status.value,
        progress=job.progress,
        eta_seconds=await state.actions.eta_seconds(job),
        url=await state.media.url(job.storage_key) if done else None,
        thumbnail_url=await state.media.url(job.thumbnail_key) if done else None,
        error=_error(job),
        attempts=job.attempts,
        provider=job.provider,
        updated_at=updated,
    )


async def detail_view(state: ApiState, job: ImageJob) -> ImageDetail:
    done = job.status.value == "completed"
    return ImageDetail(
        image_id=job.id,
        user_id=job.user_id,
        status=job.status.value,
        progress=job.progress,
        params=job.params,
        pack_id=job.pack_id,
        pack_version=job.pack_version,
        template_version=job.template_version,
        sequence_id=job.sequence_id,
        frame_id=job.frame_id,
        provider=job.provider,
        model=job.model,
        seed=job.seed,
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        url=await state.media.url(job.storage_key) if done else None,
        thumbnail_url=await state.media.url(job.thumbnail_key) if done else None,
        content_type=job.content_type,
        width=job.width,
        height=job.height,
        bytes=job.bytes,
        sha256=job.sha256,
        cost_usd=job.cost_usd,
        provider_latency_ms=job.provider_latency_ms,
        attempts=job.attempts,
        attempt_log=list(job.attempt_log or []),
        error=_error(job),
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        consistency=consistency_view(job),
        variant=job.variant,
        reroll_of=job.reroll_of,
        reroll_attempt=job.reroll_attempt,
    )


def consistency_view(job: ImageJob) -> Consistency | None:
    if job.consistency is None:
        return None
    status = job.consistency.get("status")
    return Consistency(
        score=job.consistency_score,
        status=status if isinstance(status, str) else "skipped",
        report=job.consistency,
    )


def accepted(request: Request, job: ImageJob, reused: bool) -> Accepted:
    status_url = str(request.url_for("image_status", image_id=job.id).path)
    events_url = str(request.url_for("image_events", image_id=job.id).path)
    return Accepted(
        image_id=job.id,
        status=job.status.value,
        status_url=status_url,
        events_url=events_url,
        reused=reused,
    )


async def _visible(state: ApiState, caller: Principal, image_id: uuid.UUID) -> ImageJob:
    try:
        return await state.actions.visible(caller, image_id)
    except ImageNotFound:
        raise not_found() from None


@router.post(
    "/generate",
    status_code=202,
    responses=documented(
        s422="Invalid parameters or blocked content",
        s401="No or bad API key",
        s503="The moderation service cannot be reached",
    ),
)
async def generate(
    body: GenerateRequest,
    request: Request,
    response: Response,
    state: State,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Accepted:
    """Queue one image. An identical earlier request (parameters, seed, provider) is reused.

    With an `Idempotency-Key` header, retries of the same request return the same image for 24
    hours; the same key with a different body is refused.
    """
    runtime = state.runtime
    await check_safety(state, caller, body.engine_params())

    async def submit() -> tuple[ImageJob, bool]:
        await check_quota(state, caller, 1)
        result = await runtime.generation.submit(
            caller.user_id,
            body.engine_params(),
            provider=body.provider,
            force=body.force,
            callback_url=body.callback_url,
        )
        return result.job, result.reused

    if idempotency_key is None:
        job, reused = await submit()
    else:
        try:
            outcome = await runtime.idempotency.run(
                caller.user_id,
                idempotency_key,
                body.model_dump(mode="json"),
                submit,
                runtime.jobs.get,
            )
        except IdempotencyKeyReused:
            raise ApiProblem(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
                errors=[
                    {
                        "code": "idempotency_key_reused",
                        "field": "Idempotency-Key",
                        "message": "use a new key for a different request",
                    }
                ],
            ) from None
        except IdempotencyInProgress:
            raise ApiProblem(
                409,
                "idempotency_in_progress",
                "the first request with this Idempotency-Key is still being handled",
                headers={"Retry-After": "1"},
            ) from None
        job, reused = outcome.job, outcome.reused
        if outcome.replayed:
            response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = str(request.url_for("get_image", image_id=job.id).path)
    return accepted(request, job, reused)


# query-string names -> the history query's own field names
_LIST_PARAMS = {"status": "statuses", "q": "text", "sequence": "sequence_id"}


@router.get(
    "/user/{user_id}",
    responses=documented(s404="No such user visible to the caller", s422="Bad filter"),
)
async def list_images(
    user_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    state: State,
    caller: Caller,
    status: Annotated[str | None, Query(max_length=200, examples=["completed,failed"])] = None,
    pose: Annotated[str | None, Query(max_length=64)] = None,
    outfit: Annotated[str | None, Query(max_length=64)] = None,
    footwear: Annotated[str | None, Query(max_length=64)] = None,
    prop: Annotated[str | None, Query(max_length=64)] = None,
    frame: Annotated[str | None, Query(max_length=120)] = None,
    provider: Annotated[str | None, Query(max_length=32)] = None,
    sequence: Annotated[str | None, Query(max_length=64)] = None,
    created_after: Annotated[str | None, Query(max_length=40)] = None,
    created_before: Annotated[str | None, Query(max_length=40)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Prompt text or labels")] = None,
    sort: Annotated[str | None, Query(max_length=16, examples=["newest", "oldest"])] = None,
    limit: Annotated[str | None, Query(max_length=8, description="1..200, default 50")] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ImageList:
    """A user's images with filters, text search, sort and keyset pagination (`next_cursor`).

    Pages stay stable while new images arrive: walking the cursors visits each image once.
    """
    check_user_id(user_id)  # a malformed id is a rejected parameter, not an empty history
    if user_id != caller.user_id and not caller.is_admin:
        raise not_found("user")
    raw = {
        "statuses": status,
        "pose": pose,
        "outfit": outfit,
        "footwear": footwear,
        "prop": prop,
        "frame": frame,
        "provider": provider,
        "sequence_id": sequence,
        "created_after": created_after,
        "created_before": created_before,
        "text": q,
        "sort": sort,
        "limit": limit,
        "cursor": cursor,
    }
    history = state.runtime.history
    internal = {value: key for key, value in _LIST_PARAMS.items()}
    try:
        query = history.parse(**raw)
        page = await history.list_for_user(user_id, query)
    except ProblemsError as exc:
        problems = tuple(
            replace(problem, field=internal.get(problem.field, problem.field))
            for problem in exc.problems
        )
        raise InvalidParametersError(problems, exc.summary) from None
    next_url = None
    if page.next_cursor is not None:
        next_url = str(request.url.include_query_params(cursor=page.next_cursor))
        next_url = next_url[len(str(request.base_url)) - 1 :]
    return ImageList(
        items=[await detail_view(state, job) for job in page.items],
        next_cursor=page.next_cursor,
        next_url=next_url,
    )


@router.get("/{image_id}/status", name="image_status", responses=NOT_FOUND)
async def image_status(image_id: uuid.UUID, state: State, caller: Caller) -> ImageStatus:
    """Status, progress 0..1, an ETA from recent provider latencies, the URL when done."""
    return await status_view(state, await _visible(state, caller, image_id))


@router.get(
    "/{image_id}/events",
    name="image_events",
    responses={200: {"content": {"text/event-stream": {}}}, **NOT_FOUND},
)
async def image_events(
    image_id: uuid.UUID, request: Request, state: State, caller: Caller
) -> StreamingResponse:
    """Server-Sent Events: a `status` event at every change, `end` once the image is final."""
    await _visible(state, caller, image_id)
    return StreamingResponse(
        _event_stream(state, caller, image_id, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _event_stream(
    state: ApiState, caller: Principal, image_id: uuid.UUID, request: Request
) -> AsyncIterator[str]:
    # the row is the source of truth in every mode, so any API process can serve any image's
    # events: poll it, and send only changes (plus a comment now and then to keep proxies open)
    last = ""
    sent = 0
    quiet = 0.0
    yield f"retry: {int(state.events_poll_seconds * 2000)}\n\n"
    while True:
        try:
            job = await state.actions.visible(caller, image_id)
        except ImageNotFound:
            yield 'event: end\ndata: {"status": "deleted"}\n\n'
            return
        payload = (await status_view(state, job)).model_dump(mode="json")
        payload.pop("updated_at", None)
        text = json.dumps(payload, separators=(",", ":"))
        if text != last:
            sent += 1
            last = text
            quiet = 0.0
            yield f"id: {sent}\nevent: status\ndata: {text}\n\n"
        if job.terminal:
            yield f"event: end\ndata: {text}\n\n"
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(state.events_poll_seconds)
        quiet += state.events_poll_seconds
        if quiet >= state.heartbeat_seconds:
            quiet = 0.0
            yield ": keep-alive\n\n"


@router.get("/{image_id}", name="get_image", responses=NOT_FOUND)
async def get_image(image_id: uuid.UUID, state: State, caller: Caller) -> ImageDetail:
    """Everything known about an image: parameters, prompt, provider, cost, timings, attempts."""
    return await detail_view(state, await _visible(state, caller, image_id))


@router.delete("/{image_id}", status_code=204, responses=NOT_FOUND)
async def delete_image(image_id: uuid.UUID, state: State, caller: Caller) -> Response:
    """Soft-delete: the record stays for the audit trail, the stored objects are removed."""
    try:
        result = await state.actions.delete(caller, image_id)
    except ImageNotFound:
        raise not_found() from None
    await state.runtime.audit.record(
        caller.user_id,
        AuditAction.IMAGE_DELETED,
        str(image_id),
        owner=result.job.user_id,
        objects_removed=result.objects_removed,
    )
    return Response(status_code=204)


@router.post(
    "/{image_id}/cancel",
    responses=documented(s404="No such image", s409="Already final"),
)
async def cancel_image(image_id: uuid.UUID, state: State, caller: Caller) -> ImageStatus:
    """Cancel a queued or running image; a running provider call's result is discarded."""
    try:
        job = await state.actions.cancel(caller, image_id)
    except ImageNotFound:
        raise not_found() from None
    except ImageStateConflict as exc:
        raise ApiProblem(409, "not_cancellable", str(exc)) from None
    await state.runtime.audit.record(caller.user_id, AuditAction.IMAGE_CANCELLED, str(image_id))
    return await status_view(state, job)


@router.post("/{image_id}/regenerate", status_code=202, responses=NOT_FOUND)
async def regenerate_image(
    image_id: uuid.UUID,
    request: Request,
    state: State,
    caller: Caller,
    body: RegenerateRequest | None = None,
) -> Accepted:
    """Make the image again with the same parameters: `seed` is `same`, `new` or a number."""
    choice = body.seed if body is not None else "new"
    await _visible(state, caller, image_id)
    await check_quota(state, caller, 1)
    try:
        result = await state.actions.regenerate(caller, image_id, choice)
    except ImageNotFound:
        raise not_found() from None
    return accepted(request, result.job, result.reused)


def _share_view(share: ShareInfo, url: str | None = None) -> ShareLink:
    return ShareLink(
        share_id=share.id,
        image_id=share.image_id,
        url=url,
        created_at=share.created_at,
        expires_at=share.expires_at,
        revoked_at=share.revoked_at,
    )


async def _completed(state: ApiState, caller: Principal, image_id: uuid.UUID) -> ImageJob:
    job = await _visible(state, caller, image_id)
    if job.status is not JobStatus.COMPLETED or job.storage_key is None:
        raise ApiProblem(409, "not_completed", f"the image is {job.status.value}, not completed")
    return job


@router.post(
    "/{image_id}/share",
    status_code=201,
    responses=documented(s404="No such image", s409="Not completed"),
)
async def share_image(
    image_id: uuid.UUID,
    request: Request,
    state: State,
    caller: Caller,
    body: ShareRequest | None = None,
) -> ShareLink:
    """A public link to the image that works without a key until it expires or is revoked."""
    job = await _completed(state, caller, image_id)
    lifetime = timedelta(seconds=(body or ShareRequest()).expires_in_seconds)
    new = await state.runtime.sharing.create(job, lifetime)
    url = str(request.url_for("shared_image", token=new.token))
    await state.runtime.audit.record(
        caller.user_id,
        AuditAction.SHARE_CREATED,
        str(image_id),
        share_id=str(new.share.id),
        expires_at=new.share.expires_at.isoformat(),
    )
    return _share_view(new.share, url)


@router.get("/{image_id}/shares", responses=NOT_FOUND)
async def list_shares(image_id: uuid.UUID, state: State, caller: Caller) -> list[ShareLink]:
    """The image's share links, newest first (their URLs are shown only once, at creation)."""
    await _visible(state, caller, image_id)
    return [_share_view(share) for share in await state.runtime.sharing.for_image(image_id)]


@router.delete("/{image_id}/shares/{share_id}", status_code=204, responses=NOT_FOUND)
async def revoke_share(
    image_id: uuid.UUID, share_id: uuid.UUID, state: State, caller: Caller
) -> Response:
    """Revoke a share link at once; revoking twice is harmless."""
    await _visible(state, caller, image_id)
    shares = {share.id for share in await state.runtime.sharing.for_image(image_id)}
    if share_id not in shares:
        raise not_found("share link")
    await state.runtime.sharing.revoke(share_id)
    await state.runtime.audit.record(
        caller.user_id, AuditAction.SHARE_REVOKED, str(image_id), share_id=str(share_id)
    )
    return Response(status_code=204)


@router.get(
    "/{image_id}/download",
    response_class=Response,
    responses={
        200: {"content": {"image/webp": {}}},
        **documented(s404="No such image", s409="Not completed"),
    },
)
async def download_image(
    image_id: uuid.UUID, request: Request, state: State, caller: Caller
) -> Response:
    """The image as an attachment named after what it shows."""
    job = await _completed(state, caller, image_id)
    assert job.storage_key is not None
    extension = job.storage_key.rsplit(".", 1)[-1]
    parts = [job.pack_id, (job.frame_id or job.pose).replace("/", "-"), job.id.hex[:8]]
    filename = "-".join(parts) + f".{extension}"
    return await object_response(
        state.runtime.store,
        job.storage_key,
        request,
        cache_control="private, max-age=3600",
        filename=filename,
    )
