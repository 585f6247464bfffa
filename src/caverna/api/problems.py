"""Every error leaves the API as `application/problem+json` with a stable `code`.

Clients branch on `code` (and on each entry of `errors[]`: code, field, message, allowed), never
on the human `title` or `detail`. Domain rejections (ProblemsError) keep their per-field codes;
FastAPI's own request validation is translated into the same shape so a wrong type in a query
string reads like a wrong option in a body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from caverna.domain.problems import InvalidCallbackUrl, Problem, ProblemCode, ProblemsError

PROBLEM_JSON = "application/problem+json"


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


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _api_problem(_request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc)

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
