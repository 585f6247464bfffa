"""The admin pages of the studio: users and keys, providers, the queue, bulk work, audit, usage.

They call the same services as the JSON admin API (never the API over HTTP), so a change made
here is validated and audited exactly like one made with curl. Every route asks for a session
and the admin role; a signed-in user without it gets the 403 page, not a login loop.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.datastructures import FormData

from caverna.bootstrap import provider_health
from caverna.domain.accounts import AuditAction, Principal, Role, UserInfo, parse_role
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.domain.problems import (
    InvalidParametersError,
    NotFound,
    Problem,
    ProblemCode,
    ProblemsError,
)
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.providers.resilience import CircuitBreaker
from caverna.services.bulk import BULK_ACTIONS, FILTERS, BulkInfo
from caverna.services.image_actions import ImageNotFound, ImageStateConflict
from caverna.web import catalog_view
from caverna.web.i18n import register_messages, translator
from caverna.web.routes import page
from caverna.web.session import Visitor, check_csrf, signed_in, state_of

QUEUE_LIMIT = 50
AUDIT_PAGE = 50
BULK_RECENT = 20
PROBE_TIMEOUT = 3.0
QUEUE_STATUSES: tuple[JobStatus, ...] = (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.FAILED)
BULK_FILTERS: tuple[str, ...] = ("user", *FILTERS)
# what a redirect may announce: anything else in ?done= is ignored, so links cannot inject text
NOTICES: tuple[str, ...] = (
    "key_revoked",
    "quota_saved",
    "user_disabled",
    "user_enabled",
    "password_set",
    "retried",
    "cancelled",
    "not_cancellable",
    "not_retryable",
    "bulk_started",
)


class NotAdmin(Exception):
    """A signed-in visitor without the admin role: answered with the 403 page."""

    def __init__(self, found: Visitor) -> None:
        super().__init__("admins only")
        self.visitor = found


class AdminRoute(APIRoute):
    """Answers NotAdmin in one place, so no admin route can forget to (or do it differently)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handle(request)
            except NotAdmin as exc:
                if request.url.path.startswith("/web/"):
                    return JSONResponse({"detail": "admins only"}, 403)
                return page("error.html", request, exc.visitor, 403, message_key="error.forbidden")

        return guarded


router = APIRouter(include_in_schema=False, route_class=AdminRoute)


async def _admin(request: Request) -> tuple[Visitor, Principal]:
    found = await signed_in(request)
    if found.session is None or not found.is_admin:
        raise NotAdmin(found)
    return found, found.session.principal


async def _posted(request: Request) -> tuple[Visitor, Principal, FormData]:
    """The admin check comes before the CSRF check, so a non-admin learns nothing more."""
    found, admin = await _admin(request)
    form = await request.form()
    check_csrf(found, _text(form, "csrf_token", 100))
    return found, admin, form


def _text(form: FormData | Mapping[str, Any], name: str, limit: int = 200) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value is not None else "—"


def usd(value: float | None) -> str:
    """Two decimals, except for the fractions of a cent that single images often cost."""
    if value is None:
        return "—"
    return f"US$ {value:,.4f}" if 0 < abs(value) < 0.01 else f"US$ {value:,.2f}"


def _admin_page(
    name: str, request: Request, found: Visitor, section: str, status: int = 200, **values: Any
) -> Response:
    done = request.query_params.get("done")
    return page(
        f"admin/{name}",
        request,
        found,
        status,
        section=section,
        notice=done if done in NOTICES else None,
        when=when,
        usd=usd,
        **values,
    )


def _problems(exc: ProblemsError) -> list[dict[str, object]]:
    return [problem.to_dict() for problem in exc.problems]


def _not_found(request: Request, found: Visitor) -> Response:
    return page("error.html", request, found, 404, message_key="error.not_found")


# -- overview ----------------------------------------------------------------------------------


@router.get("/admin", response_class=HTMLResponse)
async def overview(request: Request) -> Response:
    found, _ = await _admin(request)
    counts = await state_of(request).runtime.jobs.counts()
    jobs = [(status.value, counts.get(status.value, 0)) for status in JobStatus]
    return _admin_page("overview.html", request, found, "overview", jobs=jobs)


# -- users and keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRow:
    user: UserInfo
    active_keys: int
    keys: int


async def _users_page(
    request: Request, found: Visitor, status: int = 200, **values: Any
) -> Response:
    runtime = state_of(request).runtime
    keys = await runtime.accounts.list_keys(None)
    every = Counter(key.user_id for key in keys)
    active = Counter(key.user_id for key in keys if not key.revoked)
    rows = [
        UserRow(user, active[user.id], every[user.id])
        for user in await runtime.accounts.list_users()
    ]
    values.setdefault("problems", [])
    values.setdefault("chosen", {})
    return _admin_page(
        "users.html",
        request,
        found,
        "users",
        status,
        rows=rows,
        roles=[role.value for role in Role],
        defaults=_quota_defaults(request),
        **values,
    )


def _quota_defaults(request: Request) -> dict[str, Any]:
    settings = state_of(request).runtime.settings
    return {"daily": settings.quota_daily_images, "monthly": settings.quota_monthly_usd}


async def _user_page(
    request: Request, found: Visitor, user_id: str, status: int = 200, **values: Any
) -> Response:
    runtime = state_of(request).runtime
    try:
        user = await runtime.accounts.get_user(user_id)
    except NotFound:
        return _not_found(request, found)
    values.setdefault("problems", [])
    response = _admin_page(
        "user.html",
        request,
        found,
        "users",
        status,
        user=user,
        keys=await runtime.accounts.list_keys(user_id),
        is_self=user.id == found.user_id,
        defaults=_quota_defaults(request),
        **values,
    )
    if values.get("new_key") is not None:
        response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/admin/users", response_class=HTMLResponse)
async def users(request: Request) -> Response:
    found, _ = await _admin(request)
    return await _users_page(request, found)


@router.get("/admin/users/{user_id}", response_class=HTMLResponse)
async def user_detail(request: Request, user_id: str) -> Response:
    found, _ = await _admin(request)
    return await _user_page(request, found, user_id)


@router.post("/admin/keys", response_class=HTMLResponse)
async def create_key(request: Request) -> Response:
    """The key is in this one answer only (never in a URL or a redirect), as in the API."""
    found, admin, form = await _posted(request)
    user_id = _text(form, "user_id", 100)
    role = _text(form, "role", 20)
    name = _text(form, "name", 200)
    try:
        new = await state_of(request).runtime.accounts.create_key(
            user_id,
            role=parse_role(role) if role else None,
            name=name,
            actor=admin.user_id,
        )
    except InvalidParametersError as exc:
        chosen = {"user_id": user_id, "role": role, "name": name}
        if _text(form, "origin", 10) == "user":
            return await _user_page(request, found, user_id, 422, problems=_problems(exc))
        return await _users_page(request, found, 422, problems=_problems(exc), chosen=chosen)
    return await _user_page(request, found, new.key.user_id, new_key=new)


@router.post("/admin/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: uuid.UUID) -> Response:
    found, admin, _ = await _posted(request)
    try:
        key = await state_of(request).runtime.accounts.revoke_key(key_id, actor=admin.user_id)
    except NotFound:
        return _not_found(request, found)
    return RedirectResponse(f"/admin/users/{key.user_id}?done=key_revoked", 303)


def _number(
    form: FormData, name: str, convert: Callable[[str], Any], problems: list[Problem]
) -> Any:
    """Empty is None (no own limit); a decimal comma is accepted, as pt-BR keyboards type it."""
    raw = _text(form, name, 40).replace(",", ".")
    if not raw:
        return None
    try:
        return convert(raw)
    except ValueError:
        problems.append(Problem(ProblemCode.INVALID_TYPE, name, f"'{raw}' is not a number"))
        return None


@router.post("/admin/users/{user_id}/quota")
async def set_quota(request: Request, user_id: str) -> Response:
    """An empty field lifts that limit back to the deployment's default."""
    found, admin, form = await _posted(request)
    problems: list[Problem] = []
    daily = _number(form, "daily_images", int, problems)
    monthly = _number(form, "monthly_usd", float, problems)
    try:
        if problems:
            raise InvalidParametersError(tuple(problems), "invalid quota")
        await state_of(request).runtime.accounts.set_quota(
            user_id, daily_images=daily, monthly_usd=monthly, actor=admin.user_id
        )
    except NotFound:
        return _not_found(request, found)
    except InvalidParametersError as exc:
        return await _user_page(request, found, user_id, 422, problems=_problems(exc))
    return RedirectResponse(f"/admin/users/{user_id}?done=quota_saved", 303)


@router.post("/admin/users/{user_id}/state")
async def set_state(request: Request, user_id: str) -> Response:
    found, admin, form = await _posted(request)
    disabled = _text(form, "disabled", 5) == "1"
    if disabled and user_id == admin.user_id:
        problem = Problem(
            ProblemCode.INVALID_CHOICE, "disabled", "an admin cannot disable themselves"
        )
        return await _user_page(request, found, user_id, 409, problems=[problem.to_dict()])
    try:
        await state_of(request).runtime.accounts.set_disabled(
            user_id, disabled, actor=admin.user_id
        )
    except NotFound:
        return _not_found(request, found)
    done = "user_disabled" if disabled else "user_enabled"
    return RedirectResponse(f"/admin/users/{user_id}?done={done}", 303)


@router.post("/admin/users/{user_id}/password")
async def set_password(request: Request, user_id: str) -> Response:
    found, admin, form = await _posted(request)
    value = form.get("password")
    password = value[:1024] if isinstance(value, str) else ""
    try:
        await state_of(request).runtime.accounts.set_password(
            user_id, password, actor=admin.user_id
        )
    except NotFound:
        return _not_found(request, found)
    except InvalidParametersError as exc:
        return await _user_page(request, found, user_id, 422, problems=_problems(exc))
    return RedirectResponse(f"/admin/users/{user_id}?done=password_set", 303)


# -- providers ---------------------------------------------------------------------------------


@router.get("/admin/providers", response_class=HTMLResponse)
async def providers(request: Request) -> Response:
    found, _ = await _admin(request)
    runtime = state_of(request).runtime
    rows = await provider_health(runtime, timeout=PROBE_TIMEOUT)
    for row in rows:
        breaker = getattr(runtime.providers.get(row["provider"]), "breaker", None)
        snapshot = breaker.snapshot() if isinstance(breaker, CircuitBreaker) else None
        row["failures"] = snapshot.consecutive_failures if snapshot is not None else None
        row["retry_in"] = snapshot.retry_in if snapshot is not None else None
    return _admin_page("providers.html", request, found, "providers", rows=rows)


# -- the queue ---------------------------------------------------------------------------------


@router.get("/admin/queue", response_class=HTMLResponse)
async def queue(request: Request) -> Response:
    found, _ = await _admin(request)
    return await _queue_page(request, found)


async def _queue_page(
    request: Request, found: Visitor, status: int = 200, **values: Any
) -> Response:
    jobs = state_of(request).runtime.jobs
    lists: list[tuple[str, list[ImageJob]]] = [
        (status.value, await jobs.recent_by_status(status.value, QUEUE_LIMIT))
        for status in QUEUE_STATUSES
    ]
    retried = request.query_params.get("image")
    try:
        image = str(uuid.UUID(retried)) if retried else None
    except ValueError:
        image = None
    values.setdefault("problems", [])
    return _admin_page(
        "queue.html",
        request,
        found,
        "queue",
        status,
        lists=lists,
        limit=QUEUE_LIMIT,
        image=image,
        **values,
    )


@router.post("/admin/queue/{image_id}/retry")
async def retry(request: Request, image_id: uuid.UUID) -> Response:
    """Same parameters, provider and seed, as the owner's new job: what failed is kept as is.

    No quota check: the owner already paid the quota for the image that failed, and an admin
    putting it right should not be refused by the owner's limits.
    """
    found, admin, _ = await _posted(request)
    actions = state_of(request).runtime.actions
    try:
        job = await actions.visible(admin, image_id)
        if job.status is not JobStatus.FAILED:
            return RedirectResponse("/admin/queue?done=not_retryable", 303)
        again = await actions.regenerate(admin, image_id, "same", within_quota=False)
    except ImageNotFound:
        return _not_found(request, found)
    except ProblemsError as exc:  # e.g. its provider is no longer configured
        return await _queue_page(request, found, 422, problems=_problems(exc))
    return RedirectResponse(f"/admin/queue?done=retried&image={again.job.id}", 303)


@router.post("/admin/queue/{image_id}/cancel")
async def cancel(request: Request, image_id: uuid.UUID) -> Response:
    found, admin, _ = await _posted(request)
    runtime = state_of(request).runtime
    try:
        job = await runtime.actions.cancel(admin, image_id)
    except ImageNotFound:
        return _not_found(request, found)
    except ImageStateConflict:
        return RedirectResponse("/admin/queue?done=not_cancellable", 303)
    await runtime.audit.record(
        admin.user_id, AuditAction.IMAGE_CANCELLED, str(image_id), owner=job.user_id, via="web"
    )
    return RedirectResponse("/admin/queue?done=cancelled", 303)


# -- bulk operations ---------------------------------------------------------------------------


def _bulk_json(operation: BulkInfo) -> dict[str, Any]:
    return {
        "operation_id": str(operation.id),
        "status": operation.status,
        "progress": operation.progress,
        "total": operation.total,
        "done": operation.done,
        "failed": operation.failed,
        "error": operation.error,
    }


async def _bulk_page(
    request: Request, found: Visitor, status: int = 200, **values: Any
) -> Response:
    runtime = state_of(request).runtime
    pack = runtime.container.packs.get(runtime.settings.default_pack)
    values.setdefault("problems", [])
    values.setdefault("chosen", {})
    return _admin_page(
        "bulk.html",
        request,
        found,
        "bulk",
        status,
        operations=await runtime.bulk.recent(BULK_RECENT),
        actions=BULK_ACTIONS,
        users=[user.id for user in await runtime.accounts.list_users()],
        kinds={kind: catalog_view.choices(pack, kind, found.locale) for kind in catalog_view.KINDS},
        frames=catalog_view.frames(pack, found.locale),
        providers=list(DIALECT_NAMES),
        statuses=[s.value for s in JobStatus if s is not JobStatus.DELETED],
        **values,
    )


@router.get("/admin/bulk", response_class=HTMLResponse)
async def bulk(request: Request) -> Response:
    found, _ = await _admin(request)
    return await _bulk_page(request, found)


@router.post("/admin/bulk", response_class=HTMLResponse)
async def start_bulk(request: Request) -> Response:
    """Without any filter an operation would touch every image of everyone: that needs a tick."""
    found, admin, form = await _posted(request)
    action = _text(form, "action", 40)
    filters = {name: _text(form, name) for name in BULK_FILTERS if _text(form, name)}
    everything = _text(form, "everything", 5) == "1"
    chosen: dict[str, Any] = {**filters, "action": action, "everything": everything}
    try:
        if not filters and not everything:
            problem = Problem(
                ProblemCode.OUT_OF_RANGE,
                "filters",
                "choose at least one filter, or tick 'every image' to act on all of them",
            )
            raise InvalidParametersError((problem,), "no filter")
        operation = await state_of(request).runtime.bulk.start(admin, action, filters)
    except InvalidParametersError as exc:
        return await _bulk_page(request, found, 422, problems=_problems(exc), chosen=chosen)
    return RedirectResponse(f"/admin/bulk?done=bulk_started#op-{operation.id}", 303)


@router.get("/web/admin/bulk/{operation_id}")
async def bulk_progress(request: Request, operation_id: uuid.UUID) -> JSONResponse:
    """What the bulk page polls while an operation runs: counts only, cheap to ask every second."""
    await _admin(request)
    operation = await state_of(request).runtime.bulk.get(operation_id)
    if operation is None:
        return JSONResponse({"detail": "not found"}, 404)
    return JSONResponse(_bulk_json(operation))


# -- the audit log -----------------------------------------------------------------------------


def _day(raw: str, name: str, problems: list[Problem]) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(Problem(ProblemCode.INVALID_TYPE, name, f"'{raw}' is not a date"))
        return None


@router.get("/admin/audit", response_class=HTMLResponse)
async def audit(request: Request) -> Response:
    """Dates are whole UTC days, both included: 'until' the 3rd means up to the end of the 3rd."""
    found, _ = await _admin(request)
    params = request.query_params
    chosen = {
        name: _text(params, name, 200)
        for name in ("action", "actor", "target", "since", "until", "cursor")
    }
    problems: list[Problem] = []
    since = _day(chosen["since"], "since", problems)
    until = _day(chosen["until"], "until", problems)
    entries: list[Any] = []
    next_url: str | None = None
    kept = {k: v for k, v in chosen.items() if v and k != "cursor"}
    first_url = "/admin/audit?" + urlencode(kept) if chosen["cursor"] else None
    try:
        if problems:
            raise InvalidParametersError(tuple(problems), "invalid audit query")
        entries, cursor = await state_of(request).runtime.audit.query(
            action=chosen["action"] or None,
            actor=chosen["actor"] or None,
            target=chosen["target"] or None,
            since=datetime.combine(since, time(), UTC) if since else None,
            until=datetime.combine(until + timedelta(days=1), time(), UTC) if until else None,
            cursor=chosen["cursor"] or None,
            limit=AUDIT_PAGE,
        )
        if cursor is not None:
            next_url = "/admin/audit?" + urlencode({**kept, "cursor": cursor})
    except InvalidParametersError as exc:
        problems_out = _problems(exc)
    else:
        problems_out = []
    filtered = any(chosen[name] for name in ("action", "actor", "target", "since", "until"))
    return _admin_page(
        "audit.html",
        request,
        found,
        "audit",
        422 if problems_out else 200,
        entries=entries,
        next_url=next_url,
        first_url=first_url,
        chosen=chosen,
        filtered=filtered,
        problems=problems_out,
        actions=[action.value for action in AuditAction],
        details=lambda value: json.dumps(value, ensure_ascii=False, sort_keys=True),
    )


# -- usage -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    label: str
    text: str
    y: int
    width: float


@dataclass(frozen=True)
class Chart:
    """A horizontal bar chart drawn by the template as inline SVG: no script, prints well."""

    id: str
    title: str
    desc: str
    bars: list[Bar]
    height: int
    WIDTH = 420
    LABEL_X = 100
    BAR_X = 108
    BAR_MAX = 200
    ROW = 30
    BAR_HEIGHT = 20


def bar_chart(
    chart_id: str, title: str, rows: list[tuple[str, float, str]], empty_text: str
) -> Chart:
    """Bars scale to the largest value; each states its value, so colour is never the only cue."""
    top = max((value for _, value, _ in rows), default=0.0)
    bars = [
        Bar(
            label=label,
            text=text,
            y=8 + index * Chart.ROW,
            width=round(Chart.BAR_MAX * value / top, 1) if top > 0 else 0.0,
        )
        for index, (label, value, text) in enumerate(rows)
    ]
    desc = "; ".join(f"{label}: {text}" for label, _, text in rows) or empty_text
    return Chart(chart_id, title, desc, bars, 16 + max(len(rows), 1) * Chart.ROW)


@router.get("/admin/usage", response_class=HTMLResponse)
async def usage(request: Request) -> Response:
    found, _ = await _admin(request)
    metric = "cost" if request.query_params.get("metric") == "cost" else "images"
    breakdown = await state_of(request).runtime.jobs.breakdown()
    providers: dict[str, dict[str, Any]] = {}
    for row in breakdown["by_provider"]:
        entry = providers.setdefault(
            row["provider"],
            {"name": row["provider"], "images": 0, "cost_usd": 0.0, "completed": 0, "failed": 0},
        )
        entry["images"] += row["images"]
        entry["cost_usd"] += row["cost_usd"]
        if row["status"] in ("completed", "failed"):
            entry[row["status"]] += row["images"]
    users = [
        {"name": row["user_id"], "images": row["images"], "cost_usd": row["cost_usd"]}
        for row in breakdown["by_user"]
    ]
    t = translator(found.locale)

    def rows(entries: list[dict[str, Any]]) -> list[tuple[str, float, str]]:
        if metric == "cost":
            return [(e["name"], float(e["cost_usd"]), usd(e["cost_usd"])) for e in entries]
        return [
            (e["name"], float(e["images"]), f"{e['images']} {t(_unit(e['images']))}")
            for e in entries
        ]

    charts = [
        bar_chart(
            "chart-providers",
            t(f"admin.usage.chart_providers_{metric}"),
            rows(list(providers.values())),
            t("admin.usage.empty"),
        ),
        bar_chart(
            "chart-users",
            t(f"admin.usage.chart_users_{metric}"),
            rows(users),
            t("admin.usage.empty"),
        ),
    ]
    return _admin_page(
        "usage.html",
        request,
        found,
        "usage",
        metric=metric,
        providers=list(providers.values()),
        users=users,
        charts=charts,
    )


def _unit(count: int) -> str:
    return "admin.usage.unit_one" if count == 1 else "admin.usage.unit"


MESSAGES: dict[str, dict[str, str]] = {
    "admin.title": {"en": "Administration", "pt-BR": "Administração"},
    "admin.sections": {"en": "Admin sections", "pt-BR": "Seções da administração"},
    "admin.overview": {"en": "Overview", "pt-BR": "Visão geral"},
    "admin.users": {"en": "Users and keys", "pt-BR": "Usuários e chaves"},
    "admin.providers": {"en": "Providers", "pt-BR": "Provedores"},
    "admin.queue": {"en": "Queue", "pt-BR": "Fila"},
    "admin.bulk": {"en": "Bulk operations", "pt-BR": "Operações em massa"},
    "admin.audit": {"en": "Audit log", "pt-BR": "Registro de auditoria"},
    "admin.usage": {"en": "Usage and cost", "pt-BR": "Uso e custo"},
    "admin.overview.jobs": {"en": "Jobs by status", "pt-BR": "Tarefas por situação"},
    "admin.overview.status": {"en": "Status", "pt-BR": "Situação"},
    "admin.overview.count": {"en": "Jobs", "pt-BR": "Tarefas"},
    "admin.overview.users_help": {
        "en": "Create and revoke API keys, set quotas and passwords, disable accounts.",
        "pt-BR": "Criar e revogar chaves de API, definir cotas e senhas, desativar contas.",
    },
    "admin.overview.providers_help": {
        "en": "Health probes and circuit breaker state of each provider.",
        "pt-BR": "Verificação de saúde e estado do disjuntor de cada provedor.",
    },
    "admin.overview.queue_help": {
        "en": "Queued, running and failed jobs; retry or cancel them.",
        "pt-BR": "Tarefas na fila, em andamento e com falha; tentar de novo ou cancelar.",
    },
    "admin.overview.bulk_help": {
        "en": "Delete or regenerate every image matching a filter, and follow the progress.",
        "pt-BR": "Excluir ou gerar de novo todas as imagens de um filtro e acompanhar o progresso.",
    },
    "admin.overview.audit_help": {
        "en": "Who did what, and when, with filters.",
        "pt-BR": "Quem fez o quê, e quando, com filtros.",
    },
    "admin.overview.usage_help": {
        "en": "Images and cost per user and per provider.",
        "pt-BR": "Imagens e custo por usuário e por provedor.",
    },
    "admin.table_scroll": {
        "en": "Table; scroll sideways to see every column",
        "pt-BR": "Tabela; role para o lado para ver todas as colunas",
    },
    "admin.problems": {"en": "Nothing was changed:", "pt-BR": "Nada foi alterado:"},
    "admin.done.key_revoked": {"en": "The key was revoked.", "pt-BR": "A chave foi revogada."},
    "admin.done.quota_saved": {"en": "Quotas saved.", "pt-BR": "Cotas salvas."},
    "admin.done.user_disabled": {
        "en": "The user was disabled: their keys and sessions stop working.",
        "pt-BR": "O usuário foi desativado: suas chaves e sessões deixam de funcionar.",
    },
    "admin.done.user_enabled": {"en": "The user was enabled.", "pt-BR": "O usuário foi ativado."},
    "admin.done.password_set": {"en": "Password set.", "pt-BR": "Senha definida."},
    "admin.done.retried": {
        "en": "A new job was queued with the same parameters and seed.",
        "pt-BR": "Uma nova tarefa entrou na fila com os mesmos parâmetros e semente.",
    },
    "admin.done.cancelled": {"en": "The job was cancelled.", "pt-BR": "A tarefa foi cancelada."},
    "admin.done.not_cancellable": {
        "en": "That job had already finished: nothing was cancelled.",
        "pt-BR": "Essa tarefa já tinha terminado: nada foi cancelado.",
    },
    "admin.done.not_retryable": {
        "en": "Only failed jobs can be retried here.",
        "pt-BR": "Só tarefas com falha podem ser repetidas aqui.",
    },
    "admin.done.bulk_started": {
        "en": "The operation was queued; its progress appears below.",
        "pt-BR": "A operação entrou na fila; o progresso aparece abaixo.",
    },
    "admin.users.user": {"en": "User", "pt-BR": "Usuário"},
    "admin.users.role": {"en": "Role", "pt-BR": "Papel"},
    "admin.users.state": {"en": "State", "pt-BR": "Estado"},
    "admin.users.active": {"en": "Active", "pt-BR": "Ativo"},
    "admin.users.disabled": {"en": "Disabled", "pt-BR": "Desativado"},
    "admin.users.daily": {"en": "Images per day", "pt-BR": "Imagens por dia"},
    "admin.users.monthly": {"en": "USD per month", "pt-BR": "USD por mês"},
    "admin.users.keys": {"en": "Keys (active / all)", "pt-BR": "Chaves (ativas / todas)"},
    "admin.users.created": {"en": "Created", "pt-BR": "Criado em"},
    "admin.users.manage": {"en": "Manage", "pt-BR": "Gerenciar"},
    "admin.users.default": {"en": "default", "pt-BR": "padrão"},
    "admin.users.unlimited": {"en": "no limit", "pt-BR": "sem limite"},
    "admin.users.empty": {"en": "No users yet.", "pt-BR": "Nenhum usuário ainda."},
    "admin.users.role.user": {"en": "user", "pt-BR": "usuário"},
    "admin.users.role.admin": {"en": "admin", "pt-BR": "admin"},
    "admin.keys.new": {"en": "Create an API key", "pt-BR": "Criar uma chave de API"},
    "admin.keys.new_help": {
        "en": "A user id that does not exist yet creates that user.",
        "pt-BR": "Um id de usuário que ainda não existe cria esse usuário.",
    },
    "admin.keys.user_id": {"en": "User id", "pt-BR": "Id do usuário"},
    "admin.keys.user_id_help": {
        "en": "Lowercase letters, digits, '.', '_' or '-'.",
        "pt-BR": "Letras minúsculas, dígitos, '.', '_' ou '-'.",
    },
    "admin.keys.role": {"en": "Role (new users only)", "pt-BR": "Papel (só usuários novos)"},
    "admin.keys.role_keep": {
        "en": "Keep (user when new)",
        "pt-BR": "Manter (usuário se for novo)",
    },
    "admin.keys.name": {"en": "Key name (optional)", "pt-BR": "Nome da chave (opcional)"},
    "admin.keys.create": {"en": "Create key", "pt-BR": "Criar chave"},
    "admin.keys.created": {"en": "New API key", "pt-BR": "Nova chave de API"},
    "admin.keys.once": {
        "en": "Copy it now: it is shown this one time and is not stored in clear anywhere.",
        "pt-BR": "Copie agora: ela aparece só desta vez e não fica guardada em claro.",
    },
    "admin.keys.user_created": {
        "en": "The user was created with this key.",
        "pt-BR": "O usuário foi criado com esta chave.",
    },
    "admin.keys.list": {"en": "API keys", "pt-BR": "Chaves de API"},
    "admin.keys.prefix": {"en": "Key", "pt-BR": "Chave"},
    "admin.keys.key_name": {"en": "Name", "pt-BR": "Nome"},
    "admin.keys.last_used": {"en": "Last used", "pt-BR": "Último uso"},
    "admin.keys.revoked": {"en": "Revoked", "pt-BR": "Revogada"},
    "admin.keys.revoke": {"en": "Revoke", "pt-BR": "Revogar"},
    "admin.keys.confirm_revoke": {
        "en": "Revoke this key? Clients using it stop working at once.",
        "pt-BR": "Revogar esta chave? Os clientes que a usam param na hora.",
    },
    "admin.keys.none": {"en": "This user has no keys.", "pt-BR": "Este usuário não tem chaves."},
    "admin.keys.actions": {"en": "Actions", "pt-BR": "Ações"},
    "admin.quota.title": {"en": "Quotas", "pt-BR": "Cotas"},
    "admin.quota.help": {
        "en": "Leave a field empty to use the default. Days and months are UTC.",
        "pt-BR": "Deixe um campo vazio para usar o padrão. Dias e meses em UTC.",
    },
    "admin.quota.save": {"en": "Save quotas", "pt-BR": "Salvar cotas"},
    "admin.state.title": {"en": "Account", "pt-BR": "Conta"},
    "admin.state.disable": {"en": "Disable user", "pt-BR": "Desativar usuário"},
    "admin.state.enable": {"en": "Enable user", "pt-BR": "Ativar usuário"},
    "admin.state.confirm_disable": {
        "en": "Disable this user? Every key and session of theirs stops working.",
        "pt-BR": "Desativar este usuário? Todas as chaves e sessões dele param de funcionar.",
    },
    "admin.state.self": {
        "en": "You cannot disable your own account.",
        "pt-BR": "Você não pode desativar a própria conta.",
    },
    "admin.password.title": {"en": "Studio password", "pt-BR": "Senha do estúdio"},
    "admin.password.label": {"en": "New password", "pt-BR": "Nova senha"},
    "admin.password.save": {"en": "Set password", "pt-BR": "Definir senha"},
    "admin.back_users": {"en": "All users", "pt-BR": "Todos os usuários"},
    "admin.providers.provider": {"en": "Provider", "pt-BR": "Provedor"},
    "admin.providers.probe": {"en": "Health probe", "pt-BR": "Verificação"},
    "admin.providers.breaker": {"en": "Circuit breaker", "pt-BR": "Disjuntor"},
    "admin.providers.failures": {"en": "Failures in a row", "pt-BR": "Falhas seguidas"},
    "admin.providers.retry_in": {"en": "Retried in", "pt-BR": "Nova tentativa em"},
    "admin.providers.detail": {"en": "Detail", "pt-BR": "Detalhe"},
    "admin.providers.healthy": {"en": "Healthy", "pt-BR": "Saudável"},
    "admin.providers.unhealthy": {"en": "Unhealthy", "pt-BR": "Com problema"},
    "admin.providers.unknown": {
        "en": "Not probed (judged by its calls)",
        "pt-BR": "Sem verificação (avaliado pelas chamadas)",
    },
    "admin.providers.breaker.closed": {
        "en": "Closed (calls go through)",
        "pt-BR": "Fechado (chamadas passam)",
    },
    "admin.providers.breaker.open": {
        "en": "Open (calls refused)",
        "pt-BR": "Aberto (chamadas recusadas)",
    },
    "admin.providers.breaker.half_open": {
        "en": "Half-open (one trial call)",
        "pt-BR": "Meio-aberto (uma chamada de teste)",
    },
    "admin.providers.breaker.none": {"en": "No breaker", "pt-BR": "Sem disjuntor"},
    "admin.providers.empty": {
        "en": "No providers configured.",
        "pt-BR": "Nenhum provedor configurado.",
    },
    "admin.queue.help": {
        "en": "The newest {limit} of each, across every user.",
        "pt-BR": "As {limit} mais recentes de cada, de todos os usuários.",
    },
    "admin.queue.queued": {"en": "Queued", "pt-BR": "Na fila"},
    "admin.queue.processing": {"en": "Running", "pt-BR": "Em andamento"},
    "admin.queue.failed": {"en": "Failed", "pt-BR": "Com falha"},
    "admin.queue.image": {"en": "Image", "pt-BR": "Imagem"},
    "admin.queue.user": {"en": "User", "pt-BR": "Usuário"},
    "admin.queue.provider": {"en": "Provider", "pt-BR": "Provedor"},
    "admin.queue.created": {"en": "Created", "pt-BR": "Criada em"},
    "admin.queue.attempts": {"en": "Attempts", "pt-BR": "Tentativas"},
    "admin.queue.progress": {"en": "Progress", "pt-BR": "Progresso"},
    "admin.queue.error": {"en": "Error", "pt-BR": "Erro"},
    "admin.queue.actions": {"en": "Actions", "pt-BR": "Ações"},
    "admin.queue.retry": {"en": "Retry", "pt-BR": "Tentar de novo"},
    "admin.queue.cancel": {"en": "Cancel", "pt-BR": "Cancelar"},
    "admin.queue.confirm_cancel": {
        "en": "Cancel this job?",
        "pt-BR": "Cancelar esta tarefa?",
    },
    "admin.queue.new_job": {"en": "Open the new job", "pt-BR": "Abrir a nova tarefa"},
    "admin.queue.empty.queued": {"en": "Nothing is waiting.", "pt-BR": "Nada está esperando."},
    "admin.queue.empty.processing": {
        "en": "Nothing is running right now.",
        "pt-BR": "Nada está em andamento agora.",
    },
    "admin.queue.empty.failed": {"en": "No failed jobs.", "pt-BR": "Nenhuma tarefa com falha."},
    "admin.bulk.new": {"en": "Start an operation", "pt-BR": "Iniciar uma operação"},
    "admin.bulk.help": {
        "en": "It runs in the background on every image matching the filters, newest first.",
        "pt-BR": "Roda em segundo plano em todas as imagens que batem com os filtros.",
    },
    "admin.bulk.action": {"en": "Action", "pt-BR": "Ação"},
    "admin.bulk.action.delete": {"en": "Delete", "pt-BR": "Excluir"},
    "admin.bulk.action.regenerate": {
        "en": "Regenerate (new seed)",
        "pt-BR": "Gerar de novo (nova semente)",
    },
    "admin.bulk.filters": {"en": "Which images", "pt-BR": "Quais imagens"},
    "admin.bulk.user": {"en": "User", "pt-BR": "Usuário"},
    "admin.bulk.sequence": {"en": "Storyboard run id", "pt-BR": "Id da execução do storyboard"},
    "admin.bulk.everything": {
        "en": "Every image (no filter): I know what I am doing",
        "pt-BR": "Todas as imagens (sem filtro): sei o que estou fazendo",
    },
    "admin.bulk.start": {"en": "Start", "pt-BR": "Iniciar"},
    "admin.bulk.confirm": {
        "en": "Start this bulk operation? It cannot be stopped once running.",
        "pt-BR": "Iniciar esta operação em massa? Não dá para parar depois de começar.",
    },
    "admin.bulk.recent": {"en": "Recent operations", "pt-BR": "Operações recentes"},
    "admin.bulk.empty": {
        "en": "No bulk operations yet.",
        "pt-BR": "Nenhuma operação em massa ainda.",
    },
    "admin.bulk.status": {"en": "Status", "pt-BR": "Situação"},
    "admin.bulk.progress": {"en": "Progress", "pt-BR": "Progresso"},
    "admin.bulk.counts": {"en": "Done / failed / total", "pt-BR": "Feitas / falhas / total"},
    "admin.bulk.actor": {"en": "Started by", "pt-BR": "Iniciada por"},
    "admin.bulk.created": {"en": "Created", "pt-BR": "Criada em"},
    "admin.bulk.status.queued": {"en": "Queued", "pt-BR": "Na fila"},
    "admin.bulk.status.running": {"en": "Running", "pt-BR": "Em andamento"},
    "admin.bulk.status.completed": {"en": "Completed", "pt-BR": "Concluída"},
    "admin.bulk.status.failed": {"en": "Failed", "pt-BR": "Falhou"},
    "admin.bulk.all": {"en": "every image", "pt-BR": "todas as imagens"},
    "admin.audit.when": {"en": "When", "pt-BR": "Quando"},
    "admin.audit.actor": {"en": "Actor", "pt-BR": "Autor"},
    "admin.audit.action": {"en": "Action", "pt-BR": "Ação"},
    "admin.audit.target": {"en": "Target", "pt-BR": "Alvo"},
    "admin.audit.details": {"en": "Details", "pt-BR": "Detalhes"},
    "admin.audit.since": {"en": "From (UTC day)", "pt-BR": "De (dia UTC)"},
    "admin.audit.until": {"en": "Until (UTC day, included)", "pt-BR": "Até (dia UTC, incluso)"},
    "admin.audit.filter": {"en": "Filter", "pt-BR": "Filtrar"},
    "admin.audit.clear": {"en": "Clear", "pt-BR": "Limpar"},
    "admin.audit.any": {"en": "Any", "pt-BR": "Qualquer"},
    "admin.audit.next": {"en": "Older entries", "pt-BR": "Registros mais antigos"},
    "admin.audit.first": {"en": "Newest entries", "pt-BR": "Registros mais recentes"},
    "admin.audit.empty": {
        "en": "The audit log is empty.",
        "pt-BR": "O registro de auditoria está vazio.",
    },
    "admin.audit.no_match": {
        "en": "No entry matches these filters.",
        "pt-BR": "Nenhum registro corresponde a esses filtros.",
    },
    "admin.usage.metric": {"en": "Chart", "pt-BR": "Gráfico"},
    "admin.usage.by_images": {"en": "Images", "pt-BR": "Imagens"},
    "admin.usage.by_cost": {"en": "Cost", "pt-BR": "Custo"},
    "admin.usage.per_provider": {"en": "Per provider", "pt-BR": "Por provedor"},
    "admin.usage.per_user": {"en": "Per user", "pt-BR": "Por usuário"},
    "admin.usage.name_provider": {"en": "Provider", "pt-BR": "Provedor"},
    "admin.usage.name_user": {"en": "User", "pt-BR": "Usuário"},
    "admin.usage.images": {"en": "Images", "pt-BR": "Imagens"},
    "admin.usage.completed": {"en": "Done", "pt-BR": "Prontas"},
    "admin.usage.failed": {"en": "Failed", "pt-BR": "Com falha"},
    "admin.usage.cost": {"en": "Estimated cost", "pt-BR": "Custo estimado"},
    "admin.usage.help": {
        "en": "Every image ever asked for, deleted ones included (they cost too).",
        "pt-BR": "Todas as imagens já pedidas, inclusive as excluídas (elas também custam).",
    },
    "admin.usage.empty": {"en": "No images yet.", "pt-BR": "Nenhuma imagem ainda."},
    "admin.usage.unit": {"en": "images", "pt-BR": "imagens"},
    "admin.usage.unit_one": {"en": "image", "pt-BR": "imagem"},
    "admin.usage.chart_providers_images": {
        "en": "Images per provider",
        "pt-BR": "Imagens por provedor",
    },
    "admin.usage.chart_providers_cost": {
        "en": "Estimated cost per provider",
        "pt-BR": "Custo estimado por provedor",
    },
    "admin.usage.chart_users_images": {"en": "Images per user", "pt-BR": "Imagens por usuário"},
    "admin.usage.chart_users_cost": {
        "en": "Estimated cost per user",
        "pt-BR": "Custo estimado por usuário",
    },
}

register_messages(MESSAGES)
