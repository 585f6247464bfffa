"""Admin routes: users, API keys, quotas, the audit log and usage statistics."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from caverna.api.deps import Admin, State
from caverna.api.problems import ApiProblem, documented
from caverna.api.schemas import (
    AuditEntryOut,
    AuditPage,
    BulkRequest,
    BulkStatus,
    KeyCreated,
    KeyOut,
    NewKeyRequest,
    QuotaRequest,
    UserOut,
    UserStateRequest,
)
from caverna.domain.accounts import AuditEntry, KeyInfo, UserInfo
from caverna.domain.problems import (
    InvalidParametersError,
    NotFound,
    Problem,
    ProblemCode,
    raise_if_any,
)
from caverna.services.bulk import BulkInfo

router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    responses=documented(s401="No or bad API key", s403="Admins only"),
)
UserId = Annotated[str, Path(min_length=1, max_length=64)]


def _user(user: UserInfo) -> UserOut:
    return UserOut(
        user_id=user.id,
        role=user.role.value,
        display_name=user.display_name,
        created_at=user.created_at,
        disabled_at=user.disabled_at,
        quota_daily_images=user.quota_daily_images,
        quota_monthly_usd=user.quota_monthly_usd,
    )


def _key(key: KeyInfo) -> KeyOut:
    return KeyOut(
        key_id=key.id,
        user_id=key.user_id,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def _entry(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        id=entry.id,
        at=entry.at,
        actor=entry.actor,
        action=entry.action.value,
        target=entry.target,
        details=entry.details,
    )


def _printable_filters(**filters: str | None) -> None:
    """Filters are compared with stored text: a control character can match nothing, and
    PostgreSQL refuses NUL outright (a server error rather than an answer)."""
    problems = [
        Problem(ProblemCode.INVALID_CHARACTERS, name, "control characters are not allowed")
        for name, value in filters.items()
        if value is not None and any(ord(ch) < 32 or ord(ch) == 127 for ch in value)
    ]
    raise_if_any(problems, InvalidParametersError, "invalid filter")


def _missing(exc: NotFound) -> ApiProblem:
    return ApiProblem(404, "not_found", str(exc))


@router.get("/users")
async def list_users(state: State, _admin: Admin) -> list[UserOut]:
    """Every user with role, state and quotas."""
    return [_user(user) for user in await state.runtime.accounts.list_users()]


@router.post("/users/{user_id}/keys", status_code=201)
async def create_key(
    user_id: UserId, state: State, admin: Admin, body: NewKeyRequest | None = None
) -> KeyCreated:
    """A new key (and the user when new); the key is in this answer only."""
    request = body or NewKeyRequest()
    new = await state.runtime.accounts.create_key(
        user_id, role=request.role, name=request.name, actor=admin.user_id
    )
    return KeyCreated(key=_key(new.key), token=new.token, user_created=new.user_created)


@router.get("/keys")
async def list_keys(
    state: State,
    _admin: Admin,
    user: Annotated[str | None, Query(max_length=64)] = None,
) -> list[KeyOut]:
    """Keys with their prefix, creation, last use and revocation (never the key itself)."""
    _printable_filters(user=user)
    return [_key(key) for key in await state.runtime.accounts.list_keys(user)]


@router.delete("/keys/{key_id}", responses=documented(s404="No such key"))
async def revoke_key(key_id: uuid.UUID, state: State, admin: Admin) -> KeyOut:
    """Revoke a key at once; revoking twice is harmless."""
    try:
        return _key(await state.runtime.accounts.revoke_key(key_id, actor=admin.user_id))
    except NotFound as exc:
        raise _missing(exc) from None


@router.put("/users/{user_id}/quota", responses=documented(s404="No such user"))
async def set_quota(user_id: UserId, body: QuotaRequest, state: State, admin: Admin) -> UserOut:
    """Images per UTC day and USD per UTC month for one user; null means the default."""
    try:
        user = await state.runtime.accounts.set_quota(
            user_id,
            daily_images=body.daily_images,
            monthly_usd=body.monthly_usd,
            actor=admin.user_id,
        )
    except NotFound as exc:
        raise _missing(exc) from None
    return _user(user)


@router.put(
    "/users/{user_id}/state",
    responses=documented(s404="No such user", s409="An admin disabling themselves"),
)
async def set_state(user_id: UserId, body: UserStateRequest, state: State, admin: Admin) -> UserOut:
    """Disable a user (every key stops working at once) or enable them again."""
    if user_id == admin.user_id and body.disabled:
        raise ApiProblem(409, "cannot_disable_self", "an admin cannot disable themselves")
    try:
        user = await state.runtime.accounts.set_disabled(
            user_id, body.disabled, actor=admin.user_id
        )
    except NotFound as exc:
        raise _missing(exc) from None
    return _user(user)


@router.get("/audit")
async def audit_log(
    state: State,
    _admin: Admin,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=128)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> AuditPage:
    """The audit log, newest first, with filters and keyset pagination."""
    _printable_filters(action=action, actor=actor, target=target, cursor=cursor)
    entries, next_cursor = await state.runtime.audit.query(
        action=action,
        actor=actor,
        target=target,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return AuditPage(items=[_entry(entry) for entry in entries], next_cursor=next_cursor)


@router.get("/stats")
async def stats(state: State, _admin: Admin) -> dict[str, Any]:
    """Jobs by status, images and cost per provider and per user, prompt cache hit rate."""
    runtime = state.runtime
    cache = await runtime.cache.stats(runtime.clock())
    lookups = cache.hits + cache.misses
    breakdown = await runtime.jobs.breakdown()
    providers: dict[str, dict[str, Any]] = {}
    for row in breakdown["by_provider"]:
        entry = providers.setdefault(
            row["provider"], {"provider": row["provider"], "images": 0, "cost_usd": 0.0}
        )
        entry["images"] += row["images"]
        entry["cost_usd"] = round(entry["cost_usd"] + row["cost_usd"], 6)
        entry[row["status"]] = row["images"]
    for entry in providers.values():
        finished = entry.get("completed", 0) + entry.get("failed", 0)
        entry["success_rate"] = round(entry.get("completed", 0) / finished, 4) if finished else None
    return {
        "jobs": await runtime.jobs.counts(),
        "providers": list(providers.values()),
        "users": breakdown["by_user"],
        "prompt_cache": {
            "entries": cache.entries,
            "hits": cache.hits,
            "misses": cache.misses,
            "hit_rate": round(cache.hits / lookups, 4) if lookups else None,
        },
    }


def _bulk(operation: BulkInfo) -> BulkStatus:
    return BulkStatus(
        operation_id=operation.id,
        action=operation.action,
        filters=operation.filters,
        status=operation.status,
        progress=operation.progress,
        total=operation.total,
        done=operation.done,
        failed=operation.failed,
        error=operation.error,
        actor=operation.actor,
        created_at=operation.created_at,
        started_at=operation.started_at,
        finished_at=operation.finished_at,
    )


@router.post("/bulk", status_code=202, responses=documented(s422="Bad action or filter"))
async def start_bulk(
    body: BulkRequest, request: Request, response: Response, state: State, admin: Admin
) -> BulkStatus:
    """Delete or regenerate every matching image in the background; follow its progress."""
    operation = await state.runtime.bulk.start(admin, body.action, body.filters)
    response.headers["Location"] = str(
        request.url_for("bulk_status", operation_id=operation.id).path
    )
    return _bulk(operation)


@router.get("/bulk", name="list_bulk")
async def list_bulk(
    state: State, _admin: Admin, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[BulkStatus]:
    """Recent bulk operations, newest first."""
    return [_bulk(operation) for operation in await state.runtime.bulk.recent(limit)]


@router.get(
    "/bulk/{operation_id}", name="bulk_status", responses=documented(s404="No such operation")
)
async def bulk_status(operation_id: uuid.UUID, state: State, _admin: Admin) -> BulkStatus:
    """Status and progress (done, failed, total) of one bulk operation."""
    operation = await state.runtime.bulk.get(operation_id)
    if operation is None:
        raise ApiProblem(404, "not_found", "no such bulk operation")
    return _bulk(operation)
