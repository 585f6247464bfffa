"""Adds the studio to the API's app: pages, static files, and the page-level error handling."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from caverna.web import gallery_extras, storyboard
from caverna.web.admin import router as admin_router
from caverna.web.routes import page, router
from caverna.web.session import CsrfFailed, LoginRequired, visitor

STATIC = Path(__file__).parent / "static"


def install_web(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(gallery_extras.router)
    app.include_router(storyboard.router)
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
