"""Problems: the one shape every rejection takes, from a bad pack file to a bad request.

A problem names a stable ``code`` (clients branch on it), the ``field`` it concerns, a human
``message`` and, where it helps, the ``allowed`` alternatives. Validation collects problems
instead of stopping at the first, so one round trip shows the user everything to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class ProblemCode(StrEnum):
    """Stable codes; renaming one is a breaking change for every client."""

    # parameter shape
    INVALID_TYPE = "invalid_type"
    UNKNOWN_FIELD = "unknown_field"
    OUT_OF_RANGE = "out_of_range"
    INVALID_CHOICE = "invalid_choice"
    TOO_LONG = "too_long"
    INVALID_CHARACTERS = "invalid_characters"
    INVALID_CURSOR = "invalid_cursor"
    INVALID_RANGE = "invalid_range"
    INVALID_CALLBACK_URL = "invalid_callback_url"
    # lookups by id
    NOT_FOUND = "not_found"
    # references into the pack
    UNKNOWN_PACK = "unknown_pack"
    UNKNOWN_OPTION = "unknown_option"
    UNKNOWN_FRAME = "unknown_frame"
    UNKNOWN_SEQUENCE = "unknown_sequence"
    UNKNOWN_PROVIDER = "unknown_provider"
    UNSUPPORTED_ASPECT_RATIO = "unsupported_aspect_ratio"
    # slots and combinations
    SLOT_OVERFLOW = "slot_overflow"
    DUPLICATE_OPTION = "duplicate_option"
    HANDS_OVERLOADED = "hands_overloaded"
    INCOMPATIBLE_OPTIONS = "incompatible_options"
    MISSING_REQUIRED_OPTION = "missing_required_option"
    # frames
    NOT_ALLOWED_IN_FRAME = "not_allowed_in_frame"
    REQUIRED_BY_FRAME = "required_by_frame"
    NOT_ALLOWED_IN_SEQUENCE = "not_allowed_in_sequence"
    FORBIDDEN_BY_FRAME = "forbidden_by_frame"
    # provider limits
    PROMPT_TOO_LONG = "prompt_too_long"
    # content safety: free text the pack's blocklist or the moderation service refused
    CONTENT_BLOCKED = "content_blocked"
    # pack files
    PACK_FILE_MISSING = "pack_file_missing"
    PACK_YAML_SYNTAX = "pack_yaml_syntax"
    PACK_SCHEMA = "pack_schema"
    PACK_REFERENCE = "pack_reference"
    PACK_DUPLICATE_ID = "pack_duplicate_id"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, precise enough to fix without reading code."""

    code: ProblemCode
    field: str
    message: str
    allowed: tuple[str, ...] = ()
    suggestion: str | None = None
    file: str | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "code": self.code.value,
            "field": self.field,
            "message": self.message,
        }
        if self.allowed:
            data["allowed"] = list(self.allowed)
        if self.suggestion is not None:
            data["suggestion"] = self.suggestion
        if self.file is not None:
            data["file"] = self.file
        return data


@dataclass(eq=False)
class ProblemsError(Exception):
    """Raised when input is rejected; carries every problem found, never a partial result."""

    problems: tuple[Problem, ...]
    summary: str = field(default="the input was rejected")

    def __post_init__(self) -> None:
        if not self.problems:
            raise ValueError("ProblemsError needs at least one problem")
        super().__init__(self.__str__())

    def __str__(self) -> str:
        lines = [f"{self.summary} ({len(self.problems)} problem(s)):"]
        for problem in self.problems:
            where = f"{problem.file}: " if problem.file else ""
            lines.append(f"  - [{problem.code.value}] {where}{problem.field}: {problem.message}")
        return "\n".join(lines)

    @property
    def codes(self) -> list[str]:
        return [problem.code.value for problem in self.problems]

    def to_dict(self) -> dict[str, object]:
        return {"summary": self.summary, "errors": [p.to_dict() for p in self.problems]}


class InvalidPackError(ProblemsError):
    """A brand pack on disk is broken: the problems name the file and the path inside it."""


class InvalidParametersError(ProblemsError):
    """Generation parameters were rejected: the problems name each offending field."""


class InvalidCallbackUrl(InvalidParametersError):
    """A webhook URL was refused: the API gives it its own code, so clients can tell it apart."""


class NotFound(LookupError):
    """A thing named by id does not exist: the caller gets a 404, not a validation error.

    It is not a ProblemsError, so handlers that turn rejected input into a 422 (or exit code 2)
    do not swallow it by accident; it still renders in the same shape.
    """

    def __init__(self, field: str, value: object, what: str) -> None:
        self.problem = Problem(ProblemCode.NOT_FOUND, field, f"no {what} with {field} '{value}'")
        super().__init__(self.problem.message)

    @property
    def summary(self) -> str:
        return "not found"

    def to_dict(self) -> dict[str, object]:
        return {"summary": self.summary, "errors": [self.problem.to_dict()]}


def raise_if_any(problems: Iterable[Problem], error: type[ProblemsError], summary: str) -> None:
    collected = tuple(problems)
    if collected:
        raise error(collected, summary)
