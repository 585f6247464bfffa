"""A user's image history: filtered, searched and paged.

Filters are checked against the pack's catalogue here, not left to SQL, so a mistyped pose is a
problem naming the allowed ids instead of a silently empty page. Rows store option ids, but people
search with the labels they read (in English or Portuguese), so free text is also resolved to the
ids whose labels contain it and the store matches those alongside the prompt text.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time
from typing import Any, Protocol, runtime_checkable

from caverna.brand.pack import BrandPack
from caverna.brand.registry import DEFAULT_PACK_ID
from caverna.brand.schema import OPTION_KINDS
from caverna.domain.jobs import JobStatus
from caverna.domain.listing import (
    SORTS,
    ImagePage,
    ImageQuery,
    normalise_text,
    query_problems,
)
from caverna.domain.problems import InvalidParametersError, Problem, ProblemCode, raise_if_any
from caverna.domain.suggest import closest
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.prompting.engine import PromptEngine

QUERY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ImageQuery))
_STATUS_VALUES: tuple[str, ...] = tuple(s.value for s in JobStatus)
_REJECTED = "the image query was rejected"
# ASCII digits only: int() would also take "1_0" and other scripts' digits
_INTEGER = re.compile(r"-?[0-9]{1,12}")


class ImageSearch(Protocol):
    async def search(
        self,
        user_id: str,
        query: ImageQuery,
        *,
        matching_options: Mapping[str, Sequence[str]],
    ) -> ImagePage:
        """One page of the user's images matching every filter of an already validated query.

        With `query.text`, an image matches when its prompt contains the text (ignoring case) or
        when one of its options is listed in `matching_options` (option kind -> ids).
        """


@runtime_checkable
class _Closeable(Protocol):
    def close(self) -> None: ...


# -- parsing query strings -----------------------------------------------------------------------


def build_query(**raw: str | None) -> ImageQuery:
    """An ImageQuery from query-string values, or every problem with its field at once.

    Statuses are comma-separated, dates ISO 8601 (a date alone, or a time without an offset, is
    read as UTC), limit an integer. Empty values count as absent. The catalogue is not consulted:
    `ImageHistory.parse` adds those checks.
    """
    query, problems = parse_query(raw)
    problems.extend(query_problems(query))
    raise_if_any(problems, InvalidParametersError, _REJECTED)
    return query


def parse_query(raw: Mapping[str, str | None]) -> tuple[ImageQuery, list[Problem]]:
    """The fields that parsed, and a problem for each that did not (left at its default).

    Range checks are left to `query_problems`, so each problem is reported once.
    """
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in QUERY_FIELDS:
            problems.append(
                Problem(
                    ProblemCode.UNKNOWN_FIELD,
                    name,
                    f"'{name}' is not a filter of the image history",
                    allowed=QUERY_FIELDS,
                    suggestion=closest(name, QUERY_FIELDS),
                )
            )
            continue
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(
                Problem(ProblemCode.INVALID_TYPE, name, f"{name} must be given as text")
            )
            continue
        text = value.strip()
        if not text:
            continue
        parsed = _parse_field(name, text, problems)
        if parsed is not None:
            values[name] = parsed
    if any(problem.field == "sort" for problem in problems):
        # a cursor can only be judged against the sort it will be used with
        values.pop("cursor", None)
    return ImageQuery(**values), problems


def _parse_field(name: str, text: str, problems: list[Problem]) -> Any:
    match name:
        case "statuses":
            return _parse_statuses(text, problems)
        case "limit":
            if _INTEGER.fullmatch(text) is None:
                problems.append(
                    Problem(
                        ProblemCode.INVALID_TYPE,
                        "limit",
                        f"limit must be an integer: '{text[:80]}'",
                    )
                )
                return None
            return int(text)
        case "sort":
            if text not in SORTS:
                problems.append(
                    Problem(
                        ProblemCode.INVALID_CHOICE,
                        "sort",
                        f"unknown sort '{text}'",
                        allowed=SORTS,
                        suggestion=closest(text, SORTS),
                    )
                )
                return None
            return text
        case "created_after" | "created_before":
            return _parse_datetime(name, text, problems)
        case "sequence_id":
            try:
                return uuid.UUID(text)
            except ValueError:
                problems.append(
                    Problem(
                        ProblemCode.INVALID_TYPE,
                        "sequence_id",
                        f"sequence_id must be a UUID: '{text[:80]}'",
                    )
                )
                return None
        case _:
            # ids, free text and the cursor stay strings; they are checked on the whole query
            return text


def _parse_statuses(text: str, problems: list[Problem]) -> tuple[JobStatus, ...] | None:
    chosen: list[JobStatus] = []
    unknown: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name in _STATUS_VALUES:
            status = JobStatus(name)
            if status not in chosen:
                chosen.append(status)
        else:
            unknown.append(name)
    for name in unknown:
        problems.append(
            Problem(
                ProblemCode.INVALID_CHOICE,
                "statuses",
                f"unknown status '{name[:80]}'",
                allowed=_STATUS_VALUES,
                suggestion=closest(name, _STATUS_VALUES),
            )
        )
    if unknown or not chosen:
        return None
    return tuple(chosen)


def _parse_datetime(name: str, text: str, problems: list[Problem]) -> datetime | None:
    try:
        if len(text) == 10:  # a date alone: from its midnight, UTC
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        # a "+00:00" offset pasted into a URL unencoded arrives as " 00:00"
        hint = " (write '+' as %2B in a URL)" if " " in text[10:] else ""
        problems.append(
            Problem(
                ProblemCode.INVALID_TYPE,
                name,
                f"{name} must be an ISO 8601 date or date-time, such as "
                f"2026-11-01 or 2026-11-01T12:00:00Z: '{text[:80]}'{hint}",
            )
        )
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- the service ---------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Case, accents and spacing removed: "pé" finds "Em pé, pronto", "PE" finds it too."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


@dataclass(frozen=True, slots=True)
class _Searchable:
    kind: str
    id: str
    texts: tuple[str, ...]


def _label_index(pack: BrandPack) -> tuple[_Searchable, ...]:
    entries = []
    for kind in OPTION_KINDS:
        for option_id, option in pack.options(kind).items():
            texts = (
                fold(option.labels.en),
                fold(option.labels.pt_br),
                option_id,
                option_id.replace("-", " "),
            )
            entries.append(_Searchable(kind, option_id, texts))
    return tuple(entries)


class ImageHistory:
    """Validates history queries against the pack and resolves free text to option ids."""

    def __init__(
        self, search: ImageSearch, prompts: PromptEngine, *, pack_id: str = DEFAULT_PACK_ID
    ) -> None:
        self._search = search
        self._prompts = prompts
        self._pack_id = pack_id
        self._labels: tuple[BrandPack, tuple[_Searchable, ...]] | None = None

    def _pack(self) -> BrandPack:
        return self._prompts.packs.get(self._pack_id)

    def parse(self, **raw: str | None) -> ImageQuery:
        """Like `build_query`, with the catalogue checks too: every problem in one answer."""
        query, problems = parse_query(raw)
        problems.extend(self.problems(query))
        raise_if_any(problems, InvalidParametersError, _REJECTED)
        return query

    def problems(self, query: ImageQuery) -> list[Problem]:
        """Everything wrong with a query, catalogue included; empty when it can run."""
        problems = query_problems(query)
        pack = self._pack()
        for kind in OPTION_KINDS:
            value = getattr(query, kind)
            options = pack.options(kind)
            if value is not None and value not in options:
                known = tuple(options)
                problems.append(
                    Problem(
                        ProblemCode.UNKNOWN_OPTION,
                        kind,
                        f"no {kind} '{value[:80]}' in pack '{pack.id}'",
                        allowed=known,
                        suggestion=closest(value, known),
                    )
                )
        if query.frame is not None and pack.resolve_frame(query.frame) is None:
            frames = tuple(pack.frames)
            problems.append(
                Problem(
                    ProblemCode.UNKNOWN_FRAME,
                    "frame",
                    f"no frame '{query.frame[:80]}' in pack '{pack.id}'",
                    allowed=frames,
                    suggestion=closest(query.frame, frames),
                )
            )
        if query.provider is not None and query.provider not in DIALECT_NAMES:
            problems.append(
                Problem(
                    ProblemCode.UNKNOWN_PROVIDER,
                    "provider",
                    f"no provider named '{query.provider[:80]}'",
                    allowed=DIALECT_NAMES,
                    suggestion=closest(query.provider, DIALECT_NAMES),
                )
            )
        return problems

    async def list_for_user(self, user_id: str, query: ImageQuery) -> ImagePage:
        """One page of the user's history; raises InvalidParametersError, reading nothing, when
        the query is wrong."""
        problems = self.problems(query)
        if not user_id:
            problems.append(Problem(ProblemCode.OUT_OF_RANGE, "user_id", "the user id is empty"))
        raise_if_any(problems, InvalidParametersError, _REJECTED)
        frame = query.frame
        if frame is not None:
            entry = self._pack().resolve_frame(frame)
            assert entry is not None  # checked above
            frame = entry.ref  # rows store "sequence/frame"; a bare frame id is accepted too
        text = normalise_text(query.text) if query.text is not None else ""
        resolved = replace(query, frame=frame, text=text or None)
        matching = self.matching_options(text) if text else {}
        return await self._search.search(user_id, resolved, matching_options=matching)

    def matching_options(self, text: str) -> dict[str, list[str]]:
        """Option ids (by kind) whose English or Portuguese label, or id, contains `text`."""
        needle = fold(text)
        if not needle:
            return {}
        matches: dict[str, list[str]] = {}
        for entry in self._label_entries():
            if any(needle in candidate for candidate in entry.texts):
                matches.setdefault(entry.kind, []).append(entry.id)
        return matches

    def _label_entries(self) -> tuple[_Searchable, ...]:
        pack = self._pack()
        # packs are immutable and a reload is a new object, so identity says when to rebuild
        if self._labels is None or self._labels[0] is not pack:
            self._labels = (pack, _label_index(pack))
        return self._labels[1]

    def close(self) -> None:
        """Release what the search holds open (on SQLite, a reader thread), if anything."""
        if isinstance(self._search, _Closeable):
            self._search.close()
