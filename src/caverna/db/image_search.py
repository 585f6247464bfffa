"""The image history in SQL: keyset-paginated SELECTs, the same for SQLite and PostgreSQL.

Every page is `ORDER BY created_at, id` in the sort direction and starts strictly after the
cursor's row with a row-value comparison, which both backends turn into a range scan of
ix_images_user_created (or of a per-filter index), so a deep page reads no more rows than the
first. Fetching one row more than the limit tells whether a next page exists without a COUNT.

Free text and props are matched with LIKE, which no index serves, and PostgreSQL cannot estimate
how many rows a pattern matches (prompts are too wide to get statistics): it guesses "almost
none", and then prefers reading the user's whole history and sorting it to walking the index in
order - seconds instead of milliseconds, measured on 100,000 images. So on PostgreSQL those
filters run over windows: a subquery takes the next rows in index order with a LIMIT (a plan no
estimate can spoil), the patterns filter that window, and further, larger windows follow only
while the page is not full. SQLite's planner walks the index for these queries anyway, and there
windows would only add a sort of each window, so it gets the single statement.

Everything a client typed reaches the database as a bound parameter; in LIKE patterns the
wildcards and the escape character are escaped first, so "50%_off" matches only itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from caverna.db.engine import TransactionRunner
from caverna.db.models import ImageRow
from caverna.domain.jobs import JobStatus
from caverna.domain.listing import (
    MATCHING_KINDS,
    ImagePage,
    ImageQuery,
    Position,
    decode_cursor,
    encode_cursor,
)
from caverna.queue.sql import IMAGES, to_job

Columns = ReadOnlyColumnCollection[str, ColumnElement[Any]]

LIKE_ESCAPE = "\\"
FIRST_WINDOW = 1_000
MAX_WINDOW = 16_000
_ALL_STATUSES = frozenset(JobStatus)


def escape_like(text: str) -> str:
    """`text` as a LIKE pattern that matches only itself."""
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def _has_prop(c: Columns, prop_id: str) -> ColumnElement[bool]:
    """Props are stored comma-joined ("torch,flask"): match a whole id, never a part of one."""
    padded = literal(",") + c.props + literal(",")
    return padded.like(f"%,{escape_like(prop_id)},%", escape=LIKE_ESCAPE)


def _status_filter(c: Columns, statuses: Sequence[JobStatus]) -> ColumnElement[bool] | None:
    chosen = frozenset(statuses)
    if chosen == _ALL_STATUSES:
        return None
    excluded = _ALL_STATUSES - chosen
    # the shorter list: the default (all but deleted) becomes `status NOT IN ('deleted')`
    if len(excluded) < len(chosen):
        return c.status.not_in(sorted(s.value for s in excluded))
    return c.status.in_(sorted(s.value for s in chosen))


def _text_filter(
    c: Columns, text: str, matching_options: Mapping[str, Sequence[str]]
) -> ColumnElement[bool]:
    unknown = set(matching_options) - set(MATCHING_KINDS)
    if unknown:
        raise ValueError(f"matching_options has keys that are not option kinds: {sorted(unknown)}")
    alternatives: list[ColumnElement[bool]] = [
        c.prompt.ilike(f"%{escape_like(text)}%", escape=LIKE_ESCAPE)
    ]
    for kind in ("pose", "outfit", "footwear"):
        ids = list(matching_options.get(kind, ()))
        if ids:
            alternatives.append(c[kind].in_(ids))
    alternatives.extend(_has_prop(c, prop_id) for prop_id in matching_options.get("prop", ()))
    return or_(*alternatives)


def _indexed(user_id: str, query: ImageQuery, start: Position | None) -> list[ColumnElement[bool]]:
    """The conditions an index can serve (or that are cheap next to one): user, status, ids,
    dates and the keyset position."""
    c: Columns = IMAGES.c
    conditions: list[ColumnElement[bool]] = [c.user_id == user_id]
    statuses = _status_filter(c, query.statuses)
    if statuses is not None:
        conditions.append(statuses)
    for name in ("pose", "outfit", "footwear", "provider"):
        value = getattr(query, name)
        if value is not None:
            conditions.append(c[name] == value)
    if query.frame is not None:
        conditions.append(c.frame_id == query.frame)
    if query.sequence_id is not None:
        conditions.append(c.sequence_id == query.sequence_id)
    if query.created_after is not None:
        conditions.append(c.created_at >= query.created_after)
    if query.created_before is not None:
        conditions.append(c.created_at < query.created_before)
    if start is not None:
        key = tuple_(c.created_at, c.id)
        bound = tuple_(
            literal(start.created_at, ImageRow.created_at.type),
            literal(start.id, ImageRow.id.type),
        )
        conditions.append(key < bound if start.sort == "newest" else key > bound)
    return conditions


def _scanned(
    c: Columns, query: ImageQuery, matching_options: Mapping[str, Sequence[str]]
) -> list[ColumnElement[bool]]:
    """The LIKE conditions: they read every row they are asked about."""
    conditions = []
    if query.prop is not None:
        conditions.append(_has_prop(c, query.prop))
    if query.text:
        conditions.append(_text_filter(c, query.text, matching_options))
    return conditions


def _order(c: Columns, query: ImageQuery) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    if query.sort == "newest":
        return c.created_at.desc(), c.id.desc()
    return c.created_at.asc(), c.id.asc()


def _start(query: ImageQuery) -> Position | None:
    return decode_cursor(query.cursor, query.sort) if query.cursor is not None else None


def search_statement(
    user_id: str,
    query: ImageQuery,
    matching_options: Mapping[str, Sequence[str]],
    *,
    start: Position | None = None,
    rows: int | None = None,
    window: int | None = None,
) -> Select[Any]:
    """One page's SELECT (by default limit + 1 rows after the query's cursor), exposed so tests
    and benchmarks can EXPLAIN it. With `window`, the LIKE filters only see that many rows."""
    start = start if start is not None else _start(query)
    wanted = rows if rows is not None else query.limit + 1
    indexed = _indexed(user_id, query, start)
    if window is None:
        c: Columns = IMAGES.c
        return (
            select(IMAGES)
            .where(and_(*indexed, *_scanned(c, query, matching_options)))
            .order_by(*_order(c, query))
            .limit(wanted)
        )
    recent = (
        select(IMAGES)
        .where(and_(*indexed))
        .order_by(*_order(IMAGES.c, query))
        .limit(window)
        .subquery("recent")
    )
    return (
        select(recent)
        .where(and_(*_scanned(recent.c, query, matching_options)))
        .order_by(*_order(recent.c, query))
        .limit(wanted)
    )


def window_end_statement(
    user_id: str, query: ImageQuery, start: Position | None, window: int
) -> Select[Any]:
    """The last row of a window, where the next one starts; none when the data ends sooner."""
    c: Columns = IMAGES.c
    return (
        select(c.created_at, c.id)
        .where(and_(*_indexed(user_id, query, start)))
        .order_by(*_order(c, query))
        .offset(window - 1)
        .limit(1)
    )


class SqlImageSearch:
    """ImageSearch over the images table, reading through a TransactionRunner.

    `windows` says whether LIKE filters run over windows of rows (see the module docstring); by
    default only on PostgreSQL. `first_window` is the size of the first window; each next one is
    four times larger, up to MAX_WINDOW.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        windows: bool | None = None,
        first_window: int = FIRST_WINDOW,
    ) -> None:
        if first_window < 1:
            raise ValueError("first_window must be at least 1")
        self._db = TransactionRunner(engine)
        self._windows = engine.dialect.name == "postgresql" if windows is None else windows
        self._first_window = first_window

    async def search(
        self,
        user_id: str,
        query: ImageQuery,
        *,
        matching_options: Mapping[str, Sequence[str]],
    ) -> ImagePage:
        if query.limit < 1:
            raise ValueError("the query was not validated: limit must be at least 1")
        start = _start(query)
        wanted = query.limit + 1
        windowed = self._windows and bool(_scanned(IMAGES.c, query, matching_options))
        first_window = self._first_window

        def run(connection: Connection) -> list[Any]:
            if not windowed:
                statement = search_statement(user_id, query, matching_options, start=start)
                return list(connection.execute(statement).all())
            found: list[Any] = []
            position, window = start, first_window
            while True:
                statement = search_statement(
                    user_id,
                    query,
                    matching_options,
                    start=position,
                    rows=wanted - len(found),
                    window=window,
                )
                found.extend(connection.execute(statement).all())
                if len(found) >= wanted:
                    return found
                end = connection.execute(
                    window_end_statement(user_id, query, position, window)
                ).first()
                if end is None:  # this window reached the end of the history
                    return found
                position = Position(query.sort, end.created_at, end.id)
                window = min(window * 4, MAX_WINDOW)

        rows = await self._db.read(run)
        items = [to_job(row) for row in rows[: query.limit]]
        next_cursor = None
        if len(rows) > query.limit:
            last = items[-1]
            next_cursor = encode_cursor(Position(query.sort, last.created_at, last.id))
        return ImagePage(items, next_cursor)

    def close(self) -> None:
        self._db.close()
