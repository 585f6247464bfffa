"""Every error leaves the API as `application/problem+json` with a stable `code`.

Clients branch on `code` (and on each entry of `errors[]`: code, field, message, allowed), never
on the human `title` or `detail`. Domain rejections (ProblemsError) keep their per-field codes;
FastAPI's own request validation is translated into the same shape so a wrong type in a query
string reads like a wrong option in a body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from caverna.domain.problems import InvalidCallbackUrl, Problem, ProblemCode, ProblemsError
from caverna.logs import bound

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)
# SQLSTATEs of a database that cannot serve right now: connection exceptions (08), insufficient
# resources such as too many connections (53), operator intervention such as a shutdown (57), and
# 55000, which is how a database that refuses connections (ALLOW_CONNECTIONS false) answers
_UNAVAILABLE_SQLSTATES = ("08", "53", "57", "55000")


class ApiProblem(Exception):
    """An HTTP-level rejection: status, stable code, and optionally per-field problems."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = [dict(error) for error in errors]
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


Responses = dict[int | str, dict[str, Any]]


def documented(**statuses: str) -> Responses:
    """OpenAPI entries for problem responses: documented(s404="No such image")."""
    return {
        int(name.lstrip("s")): {
            "description": text,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for name, text in statuses.items()
    }


def not_found(what: str = "image") -> ApiProblem:
    return ApiProblem(404, "not_found", f"no such {what}")


def problem_body(
    status: int, code: str, detail: str, errors: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:caverna:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if errors:
        body["errors"] = [dict(error) for error in errors]
    request_id = bound().get("request_id")
    if isinstance(request_id, str):  # bound by the request id layer for the request's lifetime
        body["request_id"] = request_id
    return body


def problem_response(problem: ApiProblem) -> JSONResponse:
    body = problem_body(problem.status, problem.code, problem.detail, problem.errors)
    body.update(problem.extra)
    return JSONResponse(body, problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


# FastAPI's error types -> our stable codes
_VALIDATION_CODES = {
    "extra_forbidden": ProblemCode.UNKNOWN_FIELD,
    "missing": "missing_field",
    "string_too_long": ProblemCode.TOO_LONG,
    "too_long": ProblemCode.TOO_LONG,
    "greater_than_equal": ProblemCode.OUT_OF_RANGE,
    "less_than_equal": ProblemCode.OUT_OF_RANGE,
    "greater_than": ProblemCode.OUT_OF_RANGE,
    "less_than": ProblemCode.OUT_OF_RANGE,
    "literal_error": ProblemCode.INVALID_CHOICE,
    "enum": ProblemCode.INVALID_CHOICE,
    "json_invalid": "malformed_json",
    "invalid_characters": ProblemCode.INVALID_CHARACTERS,
}


def validation_problems(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI/pydantic errors as our per-field problems (location 'body' and 'query' dropped)."""
    problems = []
    for error in errors:
        location = [part for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        field = ".".join(str(part) for part in location) or "(body)"
        kind = str(error.get("type", ""))
        code = str(_VALIDATION_CODES.get(kind, ProblemCode.INVALID_TYPE))
        entry: dict[str, Any] = {"code": code, "field": field, "message": str(error.get("msg"))}
        expected = (error.get("ctx") or {}).get("expected")
        if code == ProblemCode.INVALID_CHOICE and expected:
            allowed = str(expected).replace(" or ", ",").split(",")
            entry["allowed"] = [part.strip(" '\"") for part in allowed if part.strip(" '\"")]
        problems.append(entry)
    return problems


def problems_status(problems: Sequence[Problem]) -> int:
    """A bad shape is 422 like any other rejected field; an unknown pack too (it is a value)."""
    return 422 if problems else 400


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error means the database cannot be reached now (not that a query is wrong).

    A dropped connection, a refused one, a full pool or a database in shutdown is an outage the
    client should wait out (503), while a constraint violation or bad SQL stays a 500 bug.
    """
    if isinstance(exc, PoolTimeout | ConnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError | OperationalError):
        return True
    state = getattr(exc.orig, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_UNAVAILABLE_SQLSTATES)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _api_problem(_request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc)

    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        if not database_unavailable(exc):
            raise exc  # a real bug: answered 500 (and logged) by the outer layers
        log.warning(
            "database unavailable answering %s %s: %s", request.method, request.url.path, exc
        )
        problem = ApiProblem(
            503,
            "database_unavailable",
            "the database cannot be reached; retry shortly",
            headers={"Retry-After": "2"},
        )
        return problem_response(problem)

    for kind in (DBAPIError, PoolTimeout, ConnectionError):
        app.add_exception_handler(kind, _database_down)

    @app.exception_handler(ProblemsError)
    async def _domain_problem(_request: Request, exc: ProblemsError) -> JSONResponse:
        errors = [problem.to_dict() for problem in exc.problems]
        code = (
            "invalid_callback_url" if isinstance(exc, InvalidCallbackUrl) else "invalid_parameters"
        )
        return problem_response(
            ApiProblem(problems_status(exc.problems), code, exc.summary, errors=errors)
        )

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_problems(exc.errors())
        malformed = any(error["code"] == "malformed_json" for error in errors)
        code = "malformed_json" if malformed else "invalid_request"
        detail = "the body is not valid JSON" if malformed else "the request was rejected"
        return problem_response(ApiProblem(400 if malformed else 422, code, detail, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        return problem_response(
            ApiProblem(exc.status_code, code, str(exc.detail), headers=exc.headers)
        )
