"""The FastAPI app factory: routes, error shapes, limits, and the embedded workers.

`caverna serve` builds the app from a Container and opens the Runtime in the lifespan; tests pass
a Runtime they own. In the embedded mode the workers run as tasks of this process; replicas
started with `--no-workers` serve the API only and leave the queue to `caverna worker`s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caverna import __version__
from caverna.api.problems import ApiProblem, install_problem_handlers, problem_response
from caverna.api.routes import admin, catalog, health, images, media, sequences
from caverna.api.schemas import Problem
from caverna.api.state import build_state
from caverna.bootstrap import Container, Runtime, open_runtime
from caverna.domain.accounts import NewKey

DEFAULT_MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class ApiOptions:
    run_workers: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    events_poll_seconds: float = 0.5
    # called once with the admin key made on the very first start (serve prints it)
    announce_admin_key: Callable[[NewKey], None] | None = None


def create_app(
    container: Container, *, runtime: Runtime | None = None, options: ApiOptions = ApiOptions()
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        active = runtime if runtime is not None else await open_runtime(container)
        if owned:
            app.state.api = build_state(active, events_poll_seconds=options.events_poll_seconds)
        first = await active.accounts.ensure_first_admin()
        if first is not None and options.announce_admin_key is not None:
            options.announce_admin_key(first)
        stop = asyncio.Event()
        workers = asyncio.create_task(active.worker().run(stop)) if options.run_workers else None
        background = active.background(stop) if options.run_workers else []
        try:
            yield
        finally:
            stop.set()
            if workers is not None:
                await workers
            await asyncio.gather(*background, return_exceptions=True)
            if owned:
                await active.aclose()

    app = FastAPI(
        title="Caverna",
        version=__version__,
        summary="On-brand character images from a brand pack, through any image model.",
        lifespan=lifespan,
    )
    if runtime is not None:  # usable before (or without) the lifespan, e.g. in ASGI tests
        app.state.api = build_state(runtime, events_poll_seconds=options.events_poll_seconds)
    install_problem_handlers(app)
    _document_problems(app)

    @app.middleware("http")
    async def _metrics(request, call_next):  # type: ignore[no-untyped-def]
        return await request.app.state.api.metrics.middleware(request, call_next)

    for module in (images, sequences, catalog, admin, health, media):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)
    return app


def _document_problems(app: FastAPI) -> None:
    """Routes refer to #/components/schemas/Problem for their problem+json answers."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(components["Problem"].pop("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class BodyLimit:
    """Refuses bodies over the limit before the app reads them (413, nothing stored)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = ApiProblem(
            413, "body_too_large", f"the request body is over {self.max_bytes} bytes"
        )
        await problem_response(problem)(scope, receive, send)


class _TooLarge(Exception):
    pass
