"""The FastAPI app factory: routes, error shapes, limits, and the embedded workers.

`caverna serve` builds the app from a Container and opens the Runtime in the lifespan; tests pass
a Runtime they own. In the embedded mode the workers run as tasks of this process; replicas
started with `--no-workers` serve the API only and leave the queue to `caverna worker`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caverna import __version__
from caverna.api.deps import quota_refused
from caverna.api.metrics import HttpMetrics
from caverna.api.problems import (
    ApiProblem,
    documented,
    install_problem_handlers,
    problem_response,
)
from caverna.api.request_id import RequestId
from caverna.api.routes import admin, catalog, health, images, media, reports, sequences
from caverna.api.schemas import Problem
from caverna.api.state import build_state
from caverna.bootstrap import Container, Runtime, open_runtime
from caverna.domain.accounts import NewKey
from caverna.services.quotas import QuotaExceeded

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
        if options.run_workers:
            await active.warm_image_pool()
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
        **_without_framework_telemetry(),
    )
    if runtime is not None:  # usable before (or without) the lifespan, e.g. in ASGI tests
        app.state.api = build_state(runtime, events_poll_seconds=options.events_poll_seconds)
    install_problem_handlers(app)
    app.add_exception_handler(QuotaExceeded, _quota_refused_late)
    _document_problems(app)

    app.add_middleware(HttpMetrics)

    for module in (images, sequences, catalog, admin, health, media, reports):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes)
    app.add_middleware(RequestId)  # outermost: every answer carries it, the 413 above too
    return app


async def _quota_refused_late(request: Request, exc: Exception) -> JSONResponse:
    """A submit refused by the quota its insert holds (a concurrent submit got past the early
    check) is answered and audited like the early refusal: 429 quota_exceeded, Retry-After."""
    assert isinstance(exc, QuotaExceeded)
    owner = exc.user_id or "unknown"
    return problem_response(await quota_refused(request.app.state.api, owner, exc))


def _without_framework_telemetry() -> dict[str, Any]:
    """FastAPI releases with built-in OpenTelemetry look up the global providers on every
    request (environment reads included) even when none is configured; metrics and request ids
    are this app's own, so switch that off where the option exists."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {
        "telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    }


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
            for methods in schema.get("paths", {}).values():
                for operation in methods.values():
                    _add_common_problems(operation)
            if "HTTPValidationError" not in str(schema.get("paths")):
                components.pop("HTTPValidationError", None)
                components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Answers that come from app-wide layers (authentication and the rate limiter, request parsing,
# the body limit) rather than from a route, so each route cannot be trusted to list them.
_KEY_PROBLEMS = documented(
    s401="No API key, or one that is unknown, revoked or disabled",
    s429="Over the key's request rate, or the user's image quota (see Retry-After)",
    s503="A shared service (rate limiter, moderation) cannot be reached (see Retry-After)",
)
_BODY_PROBLEMS = documented(s400="The body is not JSON", s413="The body is over the size limit")
_INVALID = documented(s422="Rejected parameters, filters or types, each in errors[]")[422]


def _add_common_problems(operation: dict[str, Any]) -> None:
    """Document the problem answers every route of a kind can give, in the problem+json shape.

    FastAPI describes its validation errors as its own JSON body, but the handlers answer them
    as problem+json: that entry is replaced by the real one.
    """
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "application/json" in responses.get("422", {}).get("content", {}):
        responses["422"] = _INVALID
    extra = dict(_KEY_PROBLEMS) if operation.get("security") else {}
    if "requestBody" in operation:
        extra.update(_BODY_PROBLEMS)
    for status, entry in extra.items():
        responses.setdefault(str(status), entry)
    operation["responses"] = dict(sorted(responses.items()))


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
        over = started = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            # FastAPI turns any failure while reading a body into its own 400: once the limit
            # is passed, that answer is dropped and the 413 below sent instead
            if over and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted, guarded)
        if over and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = ApiProblem(
            413, "body_too_large", f"the request body is over {self.max_bytes} bytes"
        )
        await problem_response(problem)(scope, receive, send)


class _TooLarge(Exception):
    pass
