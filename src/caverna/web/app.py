"""Adds the studio to the API's app: pages, static files, and the page-level error handling."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from caverna.api.problems import ApiProblem
from caverna.web import consistency_view, gallery_extras, storyboard
from caverna.web.admin import router as admin_router
from caverna.web.problem_text import message
from caverna.web.routes import page, router
from caverna.web.session import CsrfFailed, LoginRequired, visitor

STATIC = Path(__file__).parent / "static"


def install_web(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(gallery_extras.router)
    app.include_router(storyboard.router)
    app.include_router(consistency_view.router)
    app.include_router(consistency_view.admin_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _exc: LoginRequired) -> Response:
        target = request.url.path
        if request.url.query:
            target += f"?{request.url.query}"
        if request.url.path.startswith("/web/"):
            return Response(status_code=401)
        return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)

    @app.exception_handler(CsrfFailed)
    async def _csrf(request: Request, _exc: CsrfFailed) -> Response:
        found = await visitor(request)
        return page("error.html", request, found, 403, message_key="error.csrf")

    install_page_errors(app)


def wants_page(request: Request) -> bool:
    """A browser navigating (a link, a form): it gets a page, a script or a client gets JSON."""
    path = request.url.path
    if path.startswith(("/api/", "/web/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def install_page_errors(app: FastAPI) -> None:
    """Errors met while showing a page are pages too, in the visitor's language.

    The API's handlers stay in charge of everything else: they are kept and called for any
    request that is not a browser asking for a page.
    """
    api_handlers = dict(app.exception_handlers)

    async def delegate(request: Request, exc: Exception) -> Response:
        handler = api_handlers.get(type(exc))
        if handler is None:
            raise exc
        answer = await handler(request, exc)
        assert isinstance(answer, Response)
        return answer

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if not wants_page(request):
            return await delegate(request, exc)
        found = await visitor(request)
        key = "error.method" if exc.status_code == 405 else "error.not_found"
        status = exc.status_code if exc.status_code in (404, 405) else 404
        return page("error.html", request, found, status, message_key=key)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # a page URL with a malformed id (/images/not-an-id) names nothing: not found
        if not wants_page(request):
            return await delegate(request, exc)
        found = await visitor(request)
        return page("error.html", request, found, 404, message_key="error.not_found")

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem) -> Response:
        if not wants_page(request):
            return await delegate(request, exc)
        found = await visitor(request)
        shown = message(exc.code, exc.detail, found.locale)
        response = page(
            "error.html", request, found, exc.status, message_key="error.problem", detail=shown
        )
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response
