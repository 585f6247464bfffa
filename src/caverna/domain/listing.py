"""Listing a user's images: what a client may ask for, the page it gets back, and the cursor.

Pages are cut by position, not by offset (keyset pagination): the cursor carries the sort it was
made for and the (created_at, id) of the last row served, and the next page starts strictly after
that row. Rows created while a client walks newest-first are newer than any position it holds, so
they never shift or repeat the rows of the pages still to come, and a deep page costs what the
first one does.

The cursor is opaque to clients (url-safe base64 of a small JSON) so its format can change; it is
checked strictly on the way in, because it is client input like any other field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from caverna.domain.jobs import ImageJob, JobStatus
from caverna.domain.problems import InvalidParametersError, Problem, ProblemCode

Sort = Literal["newest", "oldest"]
SORTS: tuple[Sort, ...] = get_args(Sort)
DEFAULT_SORT: Sort = "newest"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_TEXT = 200
MAX_CURSOR = 256
# deleted images stay in the table (for audit and deduplication) but are not history
DEFAULT_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JobStatus if s is not JobStatus.DELETED)
# the keys of `matching_options`: catalogue kinds a free-text search resolves labels to
MATCHING_KINDS: tuple[str, ...] = ("pose", "outfit", "footwear", "prop")

_CURSOR_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")
_REJECTED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


@dataclass(frozen=True, slots=True)
class ImageQuery:
    """Filters, free text, order and page of a history listing; every field is optional.

    `created_after` is inclusive and `created_before` exclusive, so consecutive ranges never
    count an image twice. `text` matches the prompt and the labels of catalogue options.
    """

    statuses: tuple[JobStatus, ...] = DEFAULT_STATUSES
    pose: str | None = None
    outfit: str | None = None
    footwear: str | None = None
    prop: str | None = None
    frame: str | None = None
    provider: str | None = None
    sequence_id: uuid.UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    text: str | None = None
    sort: Sort = DEFAULT_SORT
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class ImagePage:
    """One page; `next_cursor` is None on the last page."""

    items: list[ImageJob]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the next page starts strictly after this row in `sort` order."""

    sort: Sort
    created_at: datetime
    id: uuid.UUID


def encode_cursor(position: Position) -> str:
    payload = {
        "s": position.sort,
        "t": position.created_at.astimezone(UTC).isoformat(),
        "i": position.id.hex,
    }
    raw = json.dumps(payload, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, sort: Sort) -> Position:
    """The position in `cursor`; InvalidParametersError (invalid_cursor) if it is not ours or
    was made for another sort (its position would mean nothing in the other order)."""
    problem = cursor_problem(cursor, sort)
    if problem is not None:
        raise InvalidParametersError((problem,), "the cursor was rejected")
    position = _parse_cursor(cursor)
    assert position is not None
    return position


def cursor_problem(cursor: str, sort: Sort) -> Problem | None:
    position = _parse_cursor(cursor)
    if position is None:
        return Problem(
            ProblemCode.INVALID_CURSOR,
            "cursor",
            "the cursor is malformed: pass back the next_cursor of a previous page unchanged",
        )
    if position.sort != sort:
        return Problem(
            ProblemCode.INVALID_CURSOR,
            "cursor",
            f"the cursor was made for sort '{position.sort}', not '{sort}': "
            "start again without a cursor to change the order",
            allowed=(position.sort,),
        )
    return None


def _parse_cursor(cursor: str) -> Position | None:
    if not 0 < len(cursor) <= MAX_CURSOR or not _CURSOR_ALPHABET.match(cursor):
        return None
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        data = json.loads(raw.decode("ascii"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or set(data) != {"s", "t", "i"}:
        return None
    sort, at, row_id = data["s"], data["t"], data["i"]
    if sort not in SORTS or not isinstance(at, str) or not isinstance(row_id, str):
        return None
    try:
        created_at = datetime.fromisoformat(at)
        parsed_id = uuid.UUID(hex=row_id)
    except ValueError:
        return None
    if created_at.tzinfo is None:
        return None
    return Position(sort, created_at.astimezone(UTC), parsed_id)


def normalise_text(text: str) -> str:
    """NFC with single spaces, so "torch  lit" finds what "torch lit" finds."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def query_problems(query: ImageQuery) -> list[Problem]:
    """Everything wrong with a query that needs no catalogue to see; empty when it is fine."""
    problems: list[Problem] = []
    allowed_statuses = tuple(s.value for s in JobStatus)
    if not query.statuses:
        problems.append(
            Problem(
                ProblemCode.OUT_OF_RANGE,
                "statuses",
                "name at least one status, or leave the filter out to list all but deleted",
                allowed=allowed_statuses,
            )
        )
    elif not all(isinstance(status, JobStatus) for status in query.statuses):
        problems.append(
            Problem(
                ProblemCode.INVALID_CHOICE,
                "statuses",
                "statuses must be job statuses",
                allowed=allowed_statuses,
            )
        )
    if query.sort not in SORTS:
        problems.append(
            Problem(
                ProblemCode.INVALID_CHOICE,
                "sort",
                f"unknown sort '{query.sort}'",
                allowed=SORTS,
            )
        )
    if isinstance(query.limit, bool) or not isinstance(query.limit, int):
        problems.append(Problem(ProblemCode.INVALID_TYPE, "limit", "limit must be an integer"))
    elif not 1 <= query.limit <= MAX_LIMIT:
        problems.append(
            Problem(
                ProblemCode.OUT_OF_RANGE,
                "limit",
                f"limit must be between 1 and {MAX_LIMIT}, got {query.limit}: "
                "follow next_cursor for more",
                allowed=(f"1..{MAX_LIMIT}",),
            )
        )
    problems.extend(_date_problems(query))
    if query.text is not None:
        problems.extend(_text_problems(query.text))
    if query.cursor is not None and query.sort in SORTS:
        problem = cursor_problem(query.cursor, query.sort)
        if problem is not None:
            problems.append(problem)
    return problems


def _date_problems(query: ImageQuery) -> list[Problem]:
    problems = [
        Problem(
            ProblemCode.INVALID_TYPE,
            name,
            f"{name} needs a time zone (an offset such as +00:00 or Z)",
        )
        for name, value in (
            ("created_after", query.created_after),
            ("created_before", query.created_before),
        )
        if value is not None and value.tzinfo is None
    ]
    after, before = query.created_after, query.created_before
    if not problems and after is not None and before is not None and after > before:
        problems.append(
            Problem(
                ProblemCode.INVALID_RANGE,
                "created_after",
                f"created_after ({after.isoformat()}) is later than created_before "
                f"({before.isoformat()}): no image could match",
            )
        )
    return problems


def _text_problems(text: str) -> list[Problem]:
    problems = []
    if len(text) > MAX_TEXT:
        problems.append(
            Problem(
                ProblemCode.TOO_LONG,
                "text",
                f"the search text has {len(text)} characters; at most {MAX_TEXT} are accepted",
                allowed=(str(MAX_TEXT),),
            )
        )
    bad = sorted(
        {
            f"U+{ord(ch):04X}"
            for ch in text
            if unicodedata.category(ch) in _REJECTED_CATEGORIES and not ch.isspace()
        }
    )
    if bad:
        problems.append(
            Problem(
                ProblemCode.INVALID_CHARACTERS,
                "text",
                f"control or invisible characters are not allowed: {', '.join(bad[:5])}",
            )
        )
    return problems
