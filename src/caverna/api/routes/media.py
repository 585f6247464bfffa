"""Stored images served by this process: signed media links (local store) and share links."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from caverna.api.deps import State
from caverna.api.media import MEDIA_PURPOSE, THUMBNAIL_PREFIX
from caverna.api.objects import object_response
from caverna.api.problems import ApiProblem, Responses, documented, not_found
from caverna.api.state import ApiState
from caverna.bootstrap import Runtime
from caverna.domain.accounts import AuditAction
from caverna.domain.jobs import JobStatus
from caverna.services.links import InvalidLink
from caverna.storage.keys import validate_key

router = APIRouter(tags=["media"])
IMAGE_CONTENT: Responses = {200: {"content": {"image/webp": {}, "image/png": {}, "image/avif": {}}}}


@router.get(
    "/media/{key:path}",
    response_class=Response,
    responses={**IMAGE_CONTENT, **documented(s403="Bad or expired signature", s404="No object")},
)
async def media(
    key: str,
    request: Request,
    state: State,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(min_length=1, max_length=100)],
) -> Response:
    """An image or thumbnail; the link's signature grants access, so `<img>` tags just work.

    Thumbnails are made after completion; one asked for before that is made on the spot.
    """
    try:
        validate_key(key)
    except ValueError:
        raise not_found("object") from None
    try:
        state.media.signer.verify(MEDIA_PURPOSE, key, expires, sig, state.runtime.clock())
    except InvalidLink as exc:
        raise await refused_link(state, request, exc, "media") from None
    # keys are unique per image and objects never change, so caching can be aggressive
    lifetime = max(0, int(expires - state.runtime.clock().timestamp()))
    cache = f"private, max-age={lifetime}, immutable"
    if key.startswith(THUMBNAIL_PREFIX):
        fallback = await ensure_thumbnail(state.runtime, key)
        if fallback is not None:
            # no thumbnail can be made: the original rather than a broken image, briefly cached
            return await object_response(
                state.runtime.store, fallback, request, cache_control="private, max-age=60"
            )
    return await object_response(state.runtime.store, key, request, cache_control=cache)


async def refused_link(
    state: ApiState, request: Request, exc: InvalidLink, kind: str
) -> ApiProblem:
    """403; a forged link (not an expired or revoked one) is audited like a forged key."""
    if exc.forged:
        client = request.client.host if request.client else "unknown"
        await state.runtime.audit.record(
            "anonymous",
            AuditAction.AUTH_FAILED,
            None,
            client=client,
            path=request.url.path[:200],
            link=kind,
            reason=str(exc),
        )
    return ApiProblem(403, "invalid_link", str(exc))


async def ensure_thumbnail(runtime: Runtime, key: str) -> str | None:
    """Make a completed image's thumbnail now if the derivatives pass has not yet; the key of
    the original to serve instead when it cannot be made (None: serve `key` as it is)."""
    if await runtime.store.head(key) is not None:
        return None
    try:
        image_id = uuid.UUID(key.rsplit("/", 1)[-1].removesuffix(".webp"))
    except ValueError:
        return None
    job = await runtime.jobs.get(image_id)
    if job is None or job.status is not JobStatus.COMPLETED or job.thumbnail_key != key:
        return None
    if await runtime.processor.derivatives.make(job):
        return None
    return job.storage_key


@router.get(
    "/s/{token}",
    response_class=Response,
    responses={
        **IMAGE_CONTENT,
        **documented(s403="Forged, expired or revoked link", s404="The image is gone"),
    },
)
async def shared_image(
    token: Annotated[str, Path(min_length=10, max_length=200)], request: Request, state: State
) -> Response:
    """A shared image, public for as long as its link is valid and not revoked."""
    runtime = state.runtime
    try:
        share = await runtime.sharing.resolve(token)
    except InvalidLink as exc:
        raise await refused_link(state, request, exc, "share") from None
    job = await runtime.jobs.get(share.image_id)
    if job is None or job.status is not JobStatus.COMPLETED or job.storage_key is None:
        raise not_found("image")
    # short caching: a revocation must take effect soon even behind a cache
    return await object_response(
        runtime.store, job.storage_key, request, cache_control="public, max-age=60"
    )
