"""Pages of the studio. They call the services directly (never the JSON API over HTTP)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from caverna.api.deps import check_quota, quota_held
from caverna.api.objects import object_response
from caverna.api.problems import ApiProblem
from caverna.api.routes.images import detail_view, status_view
from caverna.brand.pack import BrandPack
from caverna.domain.accounts import AuditAction, Principal
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.domain.problems import ProblemsError
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.services.consistency_reports import REVIEW_REASONS
from caverna.services.image_actions import ImageNotFound
from caverna.services.sharing import DEFAULT_SHARE_LIFETIME
from caverna.services.web_sessions import SESSION_LIFETIME
from caverna.web import catalog_view
from caverna.web.i18n import LOCALES, reason_choices, reason_label
from caverna.web.problem_text import field_label, localize_all
from caverna.web.session import (
    LOCALE_COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Visitor,
    check_csrf,
    context,
    login_csrf,
    set_cookie,
    signed_in,
    state_of,
    visitor,
)

router = APIRouter(include_in_schema=False)
LiveState = dict[str, Any]
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
REVIEW_VERDICTS = ("approved", "rejected")
GALLERY_FILTERS = (
    "status",
    "pose",
    "outfit",
    "footwear",
    "prop",
    "frame",
    "provider",
    "created_after",
    "created_before",
    "q",
    "sort",
    "cursor",
)


def safe_next(value: str | None) -> str:
    """Only paths of this site: never another host (an open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/generate"


def _pack_of(request: Request, pack_id: str) -> BrandPack | None:
    """The image's own pack, when it is still installed (labels come from it)."""
    packs = state_of(request).runtime.container.packs
    return packs.get(pack_id) if pack_id in packs.ids() else None


def default_pack(request: Request) -> BrandPack:
    runtime = state_of(request).runtime
    return runtime.container.packs.get(runtime.settings.default_pack)


def page(name: str, request: Request, found: Visitor, status: int = 200, **values: Any) -> Response:
    """A page of the studio; its problems, whoever raised them, in the visitor's language."""
    if values.get("problems"):
        values["problems"] = localize_all(values["problems"], found.locale, default_pack(request))
    return templates.TemplateResponse(
        request, name, context(request, found, **values), status_code=status
    )


# -- signing in --------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str | None = None) -> Response:
    found = await visitor(request)
    if found.session is not None:
        return RedirectResponse(safe_next(next), 303)
    token = login_csrf(request)
    response = page("login.html", request, found, login_csrf=token, next=safe_next(next))
    set_cookie(response, request, LOGIN_CSRF_COOKIE, token, 3600, http_only=True)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    user: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    api_key: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "/generate",
) -> Response:
    found = await visitor(request)
    runtime = state_of(request).runtime
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    principal: Principal | None = None
    if cookie and csrf_token == cookie:
        if api_key.strip():
            principal = await runtime.accounts.authenticate(api_key.strip())
        elif user.strip():
            principal = await runtime.accounts.login(user.strip().lower(), password)
    if principal is None:
        client = request.client.host if request.client else "unknown"
        await runtime.audit.record(
            "anonymous",
            AuditAction.AUTH_FAILED,
            None,
            client=client,
            path="/login",
            user=user[:64],
        )
        token = login_csrf(request)
        response = page(
            "login.html",
            request,
            found,
            401,
            login_csrf=token,
            next=safe_next(next),
            failed=True,
            user=user,
        )
        set_cookie(response, request, LOGIN_CSRF_COOKIE, token, 3600, http_only=True)
        return response
    token, _ = await runtime.web_sessions.create(principal)
    response = RedirectResponse(safe_next(next), 303)
    seconds = int(SESSION_LIFETIME.total_seconds())
    set_cookie(response, request, SESSION_COOKIE, token, seconds, http_only=True)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(
    request: Request, csrf_token: Annotated[str, Form(max_length=100)] = ""
) -> Response:
    found = await signed_in(request)
    check_csrf(found, csrf_token)
    await state_of(request).runtime.web_sessions.end(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{code}")
async def language(request: Request, code: str, next: str | None = None) -> Response:
    response = RedirectResponse(safe_next(next), 303)
    if code in LOCALES:
        set_cookie(response, request, LOCALE_COOKIE, code, 365 * 24 * 3600, http_only=False)
    return response


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/generate", 303)


# -- generating --------------------------------------------------------------------------------


def default_dialect(request: Request) -> str:
    """The dialect the prompt panel shows first: the default provider's, when it has one."""
    wanted = state_of(request).runtime.settings.default_provider
    return wanted if wanted in DIALECT_NAMES else DIALECT_NAMES[0]


def live_state(request: Request, found: Visitor, raw: dict[str, Any], dialect: str) -> LiveState:
    """What the generate page shows for a choice: its problems, the options it rules out (with
    the reason) and the compiled prompt. The page is drawn with it and the script asks for it
    again on every change, so the first answer changes nothing on screen."""
    runtime = state_of(request).runtime
    engine = runtime.container.prompts
    params = catalog_view.clean_params(raw)
    params["locale"] = found.locale
    pack = default_pack(request)
    problems = engine.check(params, dialect)
    compiled = None
    if not problems:
        result = engine.compile({**params, "seed": params.get("seed", 0)}, dialect)
        compiled = {"prompt": result.prompt, "negative_prompt": result.negative_prompt}
    return {
        "problems": localize_all(problems, found.locale, pack),
        "disabled": catalog_view.disabled_options(engine, pack, params, dialect, found.locale),
        "compiled": compiled,
    }


def _generate_context(request: Request, found: Visitor, **values: Any) -> dict[str, Any]:
    runtime = state_of(request).runtime
    pack = default_pack(request)
    technical = pack.model.foundation.technical
    dialect = default_dialect(request)
    chosen: dict[str, Any] = values.pop("chosen", {})
    return {
        "pack": pack,
        "kinds": {
            kind: catalog_view.choices(pack, kind, found.locale) for kind in catalog_view.KINDS
        },
        "frames": catalog_view.frames(pack, found.locale),
        "aspect_ratios": list(technical.aspect_ratios),
        "default_aspect_ratio": technical.default_aspect_ratio,
        "providers": list(runtime.providers),
        "dialects": list(DIALECT_NAMES),
        "dialect": dialect,
        "chosen": chosen,
        "live": live_state(request, found, chosen, dialect),
        "problems": [],
        **values,
    }


@router.get("/generate", response_class=HTMLResponse)
async def generate_page(request: Request) -> Response:
    found = await signed_in(request)
    return page("generate.html", request, found, **_generate_context(request, found))


@router.post("/web/check")
async def check(
    request: Request, x_csrf_token: Annotated[str | None, Header()] = None
) -> JSONResponse:
    """Live validation for the generate page: problems, ruled-out options, compiled prompt."""
    found = await signed_in(request)
    check_csrf(found, x_csrf_token)
    body = await request.json()
    if not isinstance(body, dict):
        return JSONResponse({"detail": "an object is expected"}, 422)
    dialect = str(body.get("dialect") or "")
    if dialect not in DIALECT_NAMES:
        dialect = default_dialect(request)
    return JSONResponse(dict(live_state(request, found, body, dialect)))


@router.post("/generate", response_class=HTMLResponse)
async def generate(request: Request) -> Response:
    found = await signed_in(request)
    form = await request.form()
    check_csrf(found, str(form.get("csrf_token") or ""))
    assert found.session is not None
    raw: dict[str, Any] = {key: form.get(key) for key in form if key != "props"}
    raw["props"] = [str(value) for value in form.getlist("props")]
    params = catalog_view.clean_params(raw)
    params["locale"] = found.locale
    provider = str(form.get("provider") or "") or None
    state = state_of(request)
    try:
        await check_quota(state, found.session.principal, 1)
        async with quota_held(state, found.session.principal):
            result = await state.runtime.generation.submit(
                found.session.principal.user_id, params, provider=provider
            )
    except ProblemsError as exc:
        return page(
            "generate.html",
            request,
            found,
            422,
            **_generate_context(
                request, found, chosen=raw, problems=[p.to_dict() for p in exc.problems]
            ),
        )
    except ApiProblem as exc:
        problem = {"code": exc.code, "field": "", "message": exc.detail}
        return page(
            "generate.html",
            request,
            found,
            exc.status,
            **_generate_context(request, found, chosen=raw, problems=[problem]),
        )
    return RedirectResponse(f"/images/{result.job.id}", 303)


# -- one image ---------------------------------------------------------------------------------


async def _job(request: Request, found: Visitor, image_id: uuid.UUID) -> Any:
    assert found.session is not None
    try:
        return await state_of(request).actions.visible(found.session.principal, image_id)
    except ImageNotFound:
        return None


@router.get("/images/{image_id}", response_class=HTMLResponse)
async def image_page(request: Request, image_id: uuid.UUID) -> Response:
    found = await signed_in(request)
    job = await _job(request, found, image_id)
    if job is None or job.status is JobStatus.DELETED:
        return page("error.html", request, found, 404, message_key="error.not_found")
    return await _image_page(request, found, job)


async def _image_page(
    request: Request,
    found: Visitor,
    job: ImageJob,
    status: int = 200,
    problems: list[dict[str, Any]] | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    # imported here: the consistency module draws its panels with this module's page()
    from caverna.web.consistency_view import image_consistency

    state = state_of(request)
    detail = await detail_view(state, job)
    shares = await state.runtime.sharing.for_image(job.id)
    review = await state.runtime.jobs.review(job.id)
    reason = (review or {}).get("review_reason")
    return page(
        "image.html",
        request,
        found,
        status,
        image=detail,
        parameters=parameter_rows(_pack_of(request, job.pack_id), job.params, found.locale),
        shares=shares,
        review=review,
        reasons=reason_choices(found.locale),
        reason_shown=reason_label(str(reason), found.locale) if reason else None,
        consistency=await image_consistency(request, found, job),
        new_share=request.query_params.get("shared"),
        problems=problems or [],
        form=form or {},
    )


def parameter_rows(
    pack: BrandPack | None, params: dict[str, Any], locale: str
) -> list[tuple[str, str, str]]:
    """The image's parameters as a reader names them: (field, value, the id it stands for).

    Options and frames show their pack labels in the visitor's language, with the id kept
    beside them for whoever uses the API; unset parameters are left out.
    """
    rows: list[tuple[str, str, str]] = []
    kinds = {"pose": "pose", "outfit": "outfit", "footwear": "footwear", "props": "prop"}
    for key, value in params.items():
        if key in ("locale", "pack") or value is None or value == []:
            continue
        ids = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        names = ids
        if pack is not None and key in kinds:
            options = pack.options(kinds[key])  # type: ignore[arg-type]
            names = [
                catalog_view.label(options[i].labels, locale) if i in options else i for i in ids
            ]
        elif pack is not None and key == "frame" and ids[0] in pack.frames:
            names = [catalog_view.label(pack.frames[ids[0]].frame.title, locale)]
        shown = ", ".join(names)
        rows.append((field_label(key, locale), shown, ", ".join(ids) if names != ids else ""))
    return rows


def review_problems(verdict: str, reason: str | None) -> list[dict[str, Any]]:
    """A review the form could not have sent as is: said, field by field, and nothing stored."""
    problems: list[dict[str, Any]] = []
    if verdict not in REVIEW_VERDICTS:
        problems.append(
            {
                "code": "invalid_choice",
                "field": "verdict",
                "message": f"verdict must be one of: {', '.join(REVIEW_VERDICTS)}",
                "allowed": list(REVIEW_VERDICTS),
            }
        )
    if reason is not None and reason not in REVIEW_REASONS:
        problems.append(
            {
                "code": "invalid_choice",
                "field": "reason",
                "message": f"unknown reason '{reason[:64]}'",
                "allowed": list(REVIEW_REASONS),
            }
        )
    elif verdict == "rejected" and reason is None:
        problems.append(
            {
                "code": "reason_required",
                "field": "reason",
                "message": "choose the reason for rejecting the image",
                "allowed": list(REVIEW_REASONS),
            }
        )
    return problems


@router.get("/images/{image_id}/download")
async def image_download(request: Request, image_id: uuid.UUID) -> Response:
    found = await signed_in(request)
    job = await _job(request, found, image_id)
    if job is None or job.status is not JobStatus.COMPLETED or job.storage_key is None:
        return page("error.html", request, found, 404, message_key="error.not_found")
    extension = job.storage_key.rsplit(".", 1)[-1]
    name = "-".join([job.pack_id, (job.frame_id or job.pose).replace("/", "-"), job.id.hex[:8]])
    return await object_response(
        state_of(request).runtime.store,
        job.storage_key,
        request,
        cache_control="private, max-age=3600",
        filename=f"{name}.{extension}",
    )


@router.get("/web/images/{image_id}/status")
async def image_status(request: Request, image_id: uuid.UUID) -> JSONResponse:
    found = await signed_in(request)
    job = await _job(request, found, image_id)
    if job is None:
        return JSONResponse({"detail": "not found"}, 404)
    status = await status_view(state_of(request), job)
    return JSONResponse(status.model_dump(mode="json"))


@router.post("/images/{image_id}/{action}")
async def image_action(request: Request, image_id: uuid.UUID, action: str) -> Response:
    found = await signed_in(request)
    form = await request.form()
    check_csrf(found, str(form.get("csrf_token") or ""))
    assert found.session is not None
    principal = found.session.principal
    state = state_of(request)
    runtime = state.runtime
    job = await _job(request, found, image_id)
    if job is None:
        return page("error.html", request, found, 404, message_key="error.not_found")
    here = f"/images/{image_id}"
    if action == "delete":
        result = await state.actions.delete(principal, image_id)
        await runtime.audit.record(
            principal.user_id,
            AuditAction.IMAGE_DELETED,
            str(image_id),
            owner=result.job.user_id,
            via="web",
        )
        return RedirectResponse("/gallery", 303)
    if action == "regenerate":
        await check_quota(state, principal, 1)
        async with quota_held(state, principal):
            again = await state.actions.regenerate(
                principal, image_id, "same" if form.get("seed") == "same" else "new"
            )
        return RedirectResponse(f"/images/{again.job.id}", 303)
    if action == "share" and job.status is JobStatus.COMPLETED:
        new = await runtime.sharing.create(job, DEFAULT_SHARE_LIFETIME)
        await runtime.audit.record(
            principal.user_id, AuditAction.SHARE_CREATED, str(image_id), share_id=str(new.share.id)
        )
        url = str(request.url_for("shared_image", token=new.token))
        return RedirectResponse(f"{here}?shared={url}", 303)
    if action == "revoke":
        try:
            share_id = uuid.UUID(str(form.get("share_id") or ""))
        except ValueError:
            problem = {"code": "invalid_type", "field": "share_id", "message": "not a share id"}
            return await _image_page(request, found, job, 422, [problem])
        if share_id in {s.id for s in await runtime.sharing.for_image(image_id)}:
            await runtime.sharing.revoke(share_id)
            await runtime.audit.record(
                principal.user_id, AuditAction.SHARE_REVOKED, str(image_id), share_id=str(share_id)
            )
        return RedirectResponse(here, 303)
    if action == "review":
        verdict = str(form.get("verdict") or "")
        reason = str(form.get("reason") or "") or None
        note = str(form.get("note") or "")[:2000] or None
        problems = review_problems(verdict, reason)
        if problems:
            typed = {"reason": reason or "", "note": note or ""}
            return await _image_page(request, found, job, 422, problems, typed)
        await runtime.jobs.set_review(
            image_id,
            verdict,
            reason if verdict == "rejected" else None,
            note,
            principal.user_id,
        )
        return RedirectResponse(here, 303)
    return page("error.html", request, found, 404, message_key="error.not_found")


# -- the gallery -------------------------------------------------------------------------------


@router.get("/gallery", response_class=HTMLResponse)
async def gallery(request: Request) -> Response:
    found = await signed_in(request)
    assert found.session is not None
    state = state_of(request)
    runtime = state.runtime
    chosen = {name: request.query_params.get(name) or None for name in GALLERY_FILTERS}
    raw = {
        "statuses": chosen["status"],
        "pose": chosen["pose"],
        "outfit": chosen["outfit"],
        "footwear": chosen["footwear"],
        "prop": chosen["prop"],
        "frame": chosen["frame"],
        "provider": chosen["provider"],
        "created_after": chosen["created_after"],
        "created_before": chosen["created_before"],
        "text": chosen["q"],
        "sort": chosen["sort"],
        "cursor": chosen["cursor"],
        "limit": "24",
    }
    problems: list[dict[str, Any]] = []
    items: list[Any] = []
    next_url = None
    try:
        query = runtime.history.parse(**raw)
        result = await runtime.history.list_for_user(found.session.principal.user_id, query)
        items = [await detail_view(state, job) for job in result.items]
        if result.next_cursor:
            next_url = str(request.url.include_query_params(cursor=result.next_cursor))
            next_url = next_url[len(str(request.base_url)) - 1 :]
    except ProblemsError as exc:
        problems = [problem.to_dict() for problem in exc.problems]
    pack = runtime.container.packs.get(runtime.settings.default_pack)
    filtered = any(value for key, value in chosen.items() if key not in ("sort", "cursor"))
    return page(
        "gallery.html",
        request,
        found,
        items=items,
        next_url=next_url,
        problems=problems,
        chosen=chosen,
        filtered=filtered,
        kinds={kind: catalog_view.choices(pack, kind, found.locale) for kind in catalog_view.KINDS},
        frames=catalog_view.frames(pack, found.locale),
        providers=list(DIALECT_NAMES),
        statuses=[s.value for s in JobStatus if s is not JobStatus.DELETED],
        share_lifetime_days=int(DEFAULT_SHARE_LIFETIME / timedelta(days=1)),
    )
