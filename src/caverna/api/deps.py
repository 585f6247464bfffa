"""Annotated dependencies: the app's state and the authenticated caller."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from caverna.api.problems import ApiProblem
from caverna.api.state import ApiState
from caverna.domain.accounts import AuditAction, Principal
from caverna.ratelimiting import RateLimiterUnavailable
from caverna.services.quotas import QuotaExceeded
from caverna.services.safety import ContentBlocked, ModerationUnavailable

bearer = HTTPBearer(auto_error=False, description="An API key: `cav_` and 43 characters.")


async def get_state(request: Request) -> ApiState:
    # async although it awaits nothing: FastAPI runs a plain `def` dependency in a worker
    # thread, a hop that cost more CPU per status poll than the poll's own database read
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(get_state)]


def unauthorized(detail: str, code: str = "unauthorized") -> ApiProblem:
    return ApiProblem(401, code, detail, headers={"WWW-Authenticate": "Bearer"})


async def get_principal(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized("an API key is required: Authorization: Bearer cav_...")
    principal = await state.runtime.accounts.authenticate(credentials.credentials)
    if principal is None:
        client = request.client.host if request.client else "unknown"
        await state.runtime.audit.record(
            "anonymous",
            AuditAction.AUTH_FAILED,
            None,
            client=client,
            path=request.url.path,
            key_prefix=credentials.credentials[:8],
        )
        raise unauthorized("the API key is not valid or was revoked", "invalid_key")
    await _rate_limit(state, principal)
    return principal


async def _rate_limit(state: ApiState, principal: Principal) -> None:
    """Requests per key in a moving window, shared by every API process through Redis."""
    limit = state.runtime.settings.api_rate_limit
    key = str(principal.key_id or principal.user_id)
    try:
        decision = await state.runtime.rate_limiter.hit("api-key", key, limit)
    except RateLimiterUnavailable:
        raise ApiProblem(
            503,
            "unavailable",
            "the rate limiter cannot be reached; retry shortly",
            headers={"Retry-After": "5"},
        ) from None
    if not decision.allowed:
        wait = max(1, math.ceil(decision.retry_after))
        raise ApiProblem(
            429,
            "rate_limited",
            f"over {limit} for this API key; retry in {wait} s",
            headers={
                "Retry-After": str(wait),
                "RateLimit-Limit": str(decision.limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(wait),
            },
        )


async def check_quota(state: ApiState, principal: Principal, images: int) -> None:
    """Refuse (429 quota_exceeded, audited) before anything is queued or spent."""
    try:
        await state.runtime.quotas.check(principal.user_id, images)
    except QuotaExceeded as exc:
        raise await quota_refused(state, principal.user_id, exc, images) from None


async def quota_refused(
    state: ApiState, actor: str, exc: QuotaExceeded, images: int | None = None
) -> ApiProblem:
    """The audited 429 for a quota refusal, whether the early check or the insert refused."""
    owner = exc.user_id or actor
    await state.runtime.audit.record(
        actor,
        AuditAction.QUOTA_REJECTED,
        owner,
        quota=exc.kind,
        limit=exc.limit,
        used=exc.used,
        asked=images if images is not None else exc.asked,
    )
    wait = max(1, int((exc.resets_at - state.runtime.clock()).total_seconds()))
    return ApiProblem(
        429,
        "quota_exceeded",
        str(exc),
        headers={"Retry-After": str(wait)},
        extra={
            "quota": exc.kind,
            "limit": exc.limit,
            "used": exc.used,
            "resets_at": exc.resets_at.isoformat(),
        },
    )


@contextlib.asynccontextmanager
async def quota_held(state: ApiState, principal: Principal) -> AsyncIterator[None]:
    """Around a submit: the insert's own refusal becomes the same audited 429 as check_quota's
    (check_quota reads usage before the insert, so a concurrent submit can still get past it)."""
    try:
        yield
    except QuotaExceeded as exc:
        raise await quota_refused(state, principal.user_id, exc) from None


async def check_safety(state: ApiState, principal: Principal, params: Mapping[str, Any]) -> None:
    """Refuse blocked free text (422 content_blocked, audited) before quota, queue or spend.

    The audit entry names the field, the layer that refused it and why, never the text itself:
    the log is read by more people than the request was meant for.
    """
    try:
        await state.runtime.safety.check_params(params)
    except ContentBlocked as exc:
        await state.runtime.audit.record(
            principal.user_id,
            AuditAction.SAFETY_REJECTED,
            principal.user_id,
            field=exc.field,
            source=exc.source,
            reason=exc.reason,
        )
        raise ApiProblem(
            422,
            "content_blocked",
            "the request contains content this brand does not allow",
            errors=[{"code": "content_blocked", "field": exc.field, "message": exc.reason}],
        ) from None
    except ModerationUnavailable:
        raise moderation_unavailable() from None


def moderation_unavailable() -> ApiProblem:
    return ApiProblem(
        503,
        "moderation_unavailable",
        "the content moderation service cannot be reached; retry shortly",
        headers={"Retry-After": "5"},
    )


Caller = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: Caller) -> Principal:
    if not principal.is_admin:
        raise ApiProblem(403, "forbidden", "this route is for admins")
    return principal


Admin = Annotated[Principal, Depends(get_admin)]
