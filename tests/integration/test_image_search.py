"""The image history against real SQLite and PostgreSQL: filters, search, pages, rejections."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.bootstrap import build_container, open_runtime
from caverna.config import Settings
from caverna.db.image_search import SqlImageSearch
from caverna.db.models import ImageRow
from caverna.domain.jobs import ImageJob, JobStatus
from caverna.domain.listing import MAX_LIMIT, ImagePage, ImageQuery
from caverna.domain.problems import InvalidParametersError
from caverna.prompting.engine import PromptEngine
from caverna.queue.sql import SqlJobStore
from caverna.services.images import ImageHistory, build_query
from tests.factories import BASE_TIME, job_values

USER = "user-1"
INJECTIONS = (
    "'; DROP TABLE generated_images; --",
    "x' OR '1'='1",
    '" OR 1=1 --',
    "standing-ready' OR user_id <> 'user-1",
)


@pytest.fixture
async def store(db_engine: AsyncEngine) -> AsyncIterator[SqlJobStore]:
    job_store = SqlJobStore(db_engine)
    yield job_store
    await job_store.close()


@pytest.fixture
async def search(db_engine: AsyncEngine) -> AsyncIterator[SqlImageSearch]:
    image_search = SqlImageSearch(db_engine)
    yield image_search
    image_search.close()


@pytest.fixture
def history(search: SqlImageSearch, engine: PromptEngine) -> ImageHistory:
    return ImageHistory(search, engine)


async def add(store: SqlJobStore, *rows: dict[str, Any]) -> list[uuid.UUID]:
    await store.insert(list(rows), None)
    return [row["id"] for row in rows]


def row(index: int, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"prompt": "a calm captain in his cave", **overrides}
    return job_values(index, **values)


def ids(page: ImagePage) -> list[uuid.UUID]:
    return [job.id for job in page.items]


async def listing(history: ImageHistory, **query: Any) -> list[uuid.UUID]:
    return ids(await history.list_for_user(USER, ImageQuery(limit=MAX_LIMIT, **query)))


async def walk(history: ImageHistory, query: ImageQuery) -> list[ImageJob]:
    seen: list[ImageJob] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await history.list_for_user(USER, replace(query, cursor=cursor))
        assert len(page.items) <= query.limit
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("the walk did not end")


def codes(error: pytest.ExceptionInfo[InvalidParametersError]) -> list[tuple[str, str]]:
    return [(problem.code.value, problem.field) for problem in error.value.problems]


# -- what is listed ------------------------------------------------------------------------------


async def test_newest_first_without_deleted_rows_or_other_users(
    history: ImageHistory, store: SqlJobStore
) -> None:
    mine = await add(store, *(row(i) for i in range(4)))
    [deleted] = await add(store, row(5, status="deleted"))
    await add(store, row(6, user_id="user-2"), row(7, user_id="user-10"), row(8, user_id="user"))

    assert await listing(history) == mine[::-1]
    assert await listing(history, statuses=(JobStatus.DELETED,)) == [deleted]
    assert await listing(history, statuses=tuple(JobStatus)) == [deleted, *mine[::-1]]
    other = await history.list_for_user("user-2", ImageQuery())
    assert [job.user_id for job in other.items] == ["user-2"]


async def test_oldest_first(history: ImageHistory, store: SqlJobStore) -> None:
    created = await add(store, row(3), row(1), row(2))
    assert await listing(history, sort="oldest") == [created[1], created[2], created[0]]


async def test_items_are_whole_jobs(history: ImageHistory, store: SqlJobStore) -> None:
    [image_id] = await add(store, row(1, props="torch,clay-cup", prompt="lit torch"))
    [job] = (await history.list_for_user(USER, ImageQuery())).items
    assert job.id == image_id
    assert job.status is JobStatus.QUEUED
    assert job.props == "torch,clay-cup"
    assert job.created_at == BASE_TIME + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("field", "value", "column", "stored"),
    [
        ("pose", "arms-crossed", "pose", "arms-crossed"),
        ("outfit", "explorer-vest", "outfit", "explorer-vest"),
        ("footwear", "barefoot", "footwear", "barefoot"),
        ("provider", "openai", "provider", "openai"),
        ("frame", "onboarding/training", "frame_id", "onboarding/training"),
        ("frame", "training", "frame_id", "onboarding/training"),  # a unique bare frame id
        ("prop", "torch", "props", "torch"),
    ],
)
async def test_each_filter(
    history: ImageHistory, store: SqlJobStore, field: str, value: str, column: str, stored: str
) -> None:
    await add(store, row(1), row(2))
    wanted = await add(store, row(3, **{column: stored}), row(4, **{column: stored}))
    await add(store, row(5, user_id="user-2", **{column: stored}))
    assert await listing(history, **{field: value}) == wanted[::-1]


async def test_status_filter(history: ImageHistory, store: SqlJobStore) -> None:
    queued = await add(store, row(1))
    completed = await add(store, row(2, status="completed"), row(3, status="completed"))
    failed = await add(store, row(4, status="failed"))
    assert await listing(history, statuses=(JobStatus.COMPLETED,)) == completed[::-1]
    both = await listing(history, statuses=(JobStatus.FAILED, JobStatus.QUEUED))
    assert both == [*failed, *queued]


async def test_sequence_filter(history: ImageHistory, store: SqlJobStore) -> None:
    sequence_id = uuid.uuid4()
    sequence = {
        "id": sequence_id,
        "user_id": USER,
        "pack_id": "capitao-caverna",
        "sequence_key": "onboarding",
        "provider": "preview",
        "seed": 1,
        "params": {},
        "created_at": BASE_TIME,
    }
    frames = [row(i, sequence_id=sequence_id, frame_index=i) for i in range(3)]
    await store.insert(frames, sequence)
    await add(store, row(10))
    assert await listing(history, sequence_id=sequence_id, sort="oldest") == [
        f["id"] for f in frames
    ]


async def test_created_range_is_inclusive_then_exclusive(
    history: ImageHistory, store: SqlJobStore
) -> None:
    created = await add(store, *(row(i) for i in range(6)))
    after = BASE_TIME + timedelta(seconds=2)
    before = BASE_TIME + timedelta(seconds=4)
    assert await listing(history, created_after=after, created_before=before) == [
        created[3],
        created[2],
    ]
    assert await listing(history, created_after=after, created_before=after) == []
    assert await listing(history, created_before=after) == created[1::-1]


async def test_filters_combine(history: ImageHistory, store: SqlJobStore) -> None:
    match = {"pose": "arms-crossed", "outfit": "explorer-vest", "status": "completed"}
    wanted = await add(
        store, row(1, **match, props="torch"), row(2, **match, props="clay-cup,torch")
    )
    await add(
        store,
        row(3, **{**match, "pose": "standing-ready"}, props="torch"),
        row(4, **{**match, "status": "failed"}, props="torch"),
        row(5, **match, props="clay-cup"),
        row(6, **match, props="torch", provider="openai"),
        row(7, **match, props="torch", created_at=BASE_TIME + timedelta(days=3)),
    )
    found = await listing(
        history,
        pose="arms-crossed",
        outfit="explorer-vest",
        statuses=(JobStatus.COMPLETED,),
        prop="torch",
        provider="preview",
        created_before=BASE_TIME + timedelta(days=1),
    )
    assert found == wanted[::-1]


async def test_prop_matches_whole_ids_only(history: ImageHistory, store: SqlJobStore) -> None:
    wanted = await add(
        store,
        row(1, props="torch"),
        row(2, props="torch,clay-cup"),
        row(3, props="clay-cup,torch"),
        row(4, props="clay-cup,torch,hourglass"),
    )
    await add(
        store,
        row(5, props="wall-torch"),
        row(6, props="torch-stand"),
        row(7, props="torches"),
        row(8, props="clay-cup,wall-torch"),
        row(9, props=""),
    )
    assert await listing(history, prop="torch", sort="oldest") == wanted
    assert len(await listing(history, prop="wall-torch")) == 2


# -- free text -----------------------------------------------------------------------------------


async def test_text_matches_prompt_ignoring_case(history: ImageHistory, store: SqlJobStore) -> None:
    wanted = await add(
        store,
        row(1, prompt="He raises a burning TORCH high"),
        row(2, prompt="torchlight on the wall"),
    )
    await add(store, row(3, prompt="a calm morning"), row(4, prompt=None))
    assert await listing(history, text="Torch", sort="oldest") == wanted
    assert await listing(history, text="  burning   torch ") == wanted[:1]


@pytest.mark.parametrize("text", ["Arms crossed", "arms CROSSED", "Braços cruzados", "bracos"])
async def test_text_finds_a_pose_by_its_label_in_either_language(
    history: ImageHistory, store: SqlJobStore, text: str
) -> None:
    wanted = await add(store, row(1, pose="arms-crossed"), row(2, pose="arms-crossed"))
    await add(store, row(3), row(4, pose="beard-stroke"))
    assert await listing(history, text=text) == wanted[::-1]


@pytest.mark.parametrize("text", ["Tocha", "torch"])
async def test_text_finds_props_and_poses_by_label(
    history: ImageHistory, store: SqlJobStore, text: str
) -> None:
    wanted = await add(
        store,
        row(1, props="clay-cup,torch"),
        row(2, props="wall-torch"),
        row(3, pose="leading-with-torch"),
    )
    await add(store, row(4, props="clay-cup"), row(5, outfit="explorer-vest"))
    assert await listing(history, text=text, sort="oldest") == wanted


async def test_text_label_match_respects_the_other_filters(
    history: ImageHistory, store: SqlJobStore
) -> None:
    [wanted] = await add(store, row(1, pose="arms-crossed", outfit="explorer-vest"))
    await add(store, row(2, pose="arms-crossed"), row(3, pose="arms-crossed", user_id="user-2"))
    assert await listing(history, text="cruzados", outfit="explorer-vest") == [wanted]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50%", ["50% off"]),
        ("a_b", ["a_b"]),
        ("back\\slash", ["back\\slash"]),
        ("\\", ["back\\slash"]),
        ("%", ["50% off"]),
        ("_", ["a_b"]),
    ],
)
async def test_like_metacharacters_are_literal(
    history: ImageHistory, store: SqlJobStore, text: str, expected: list[str]
) -> None:
    prompts = ["50% off", "5000 off", "a_b", "axb", "back\\slash", "backslash", "back/slash"]
    await add(store, *(row(i, prompt=prompt) for i, prompt in enumerate(prompts)))
    page = await history.list_for_user(USER, ImageQuery(text=text))
    assert [job.prompt for job in page.items] == expected


# -- pages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["newest", "oldest"])
async def test_walking_every_page_returns_each_row_once_in_order(
    history: ImageHistory, store: SqlJobStore, sort: str
) -> None:
    # three rows share each timestamp: the id breaks the ties, so none is lost at a page edge
    rows = [row(i // 3) for i in range(23)]
    await add(store, *rows)
    await add(store, row(1, user_id="user-2"), row(2, status="deleted"))
    seen = await walk(history, ImageQuery(sort=sort, limit=5))  # type: ignore[arg-type]
    expected = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=sort == "newest")
    assert [job.id for job in seen] == [r["id"] for r in expected]


async def test_last_page_has_no_cursor(history: ImageHistory, store: SqlJobStore) -> None:
    await add(store, *(row(i) for i in range(4)))
    first = await history.list_for_user(USER, ImageQuery(limit=2))
    assert first.next_cursor is not None
    second = await history.list_for_user(USER, ImageQuery(limit=2, cursor=first.next_cursor))
    assert len(second.items) == 2
    assert second.next_cursor is None
    exact = await history.list_for_user(USER, ImageQuery(limit=4))
    assert exact.next_cursor is None


async def test_filtered_walk_with_text(history: ImageHistory, store: SqlJobStore) -> None:
    wanted = [row(i, prompt=f"torch number {i}") for i in range(0, 30, 2)]
    await add(store, *wanted, *(row(i, prompt="dark") for i in range(1, 30, 2)))
    seen = await walk(history, ImageQuery(text="torch", limit=4, sort="oldest"))
    assert [job.id for job in seen] == [r["id"] for r in wanted]


async def test_inserts_during_a_walk_neither_repeat_nor_skip_older_rows(
    history: ImageHistory, store: SqlJobStore
) -> None:
    older = [row(i) for i in range(20)]
    await add(store, *older)
    query = ImageQuery(limit=6)
    page = await history.list_for_user(USER, query)
    seen = list(page.items)
    newer = 100
    while page.next_cursor is not None:
        # new images land while the client reads: some later than everything, some tied with
        # the newest row it already has
        await add(store, row(newer), row(19))
        newer += 1
        page = await history.list_for_user(USER, ImageQuery(limit=6, cursor=page.next_cursor))
        seen.extend(page.items)
    expected = sorted(older, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    served = [job.id for job in seen]
    assert len(served) == len(set(served))
    older_ids = {r["id"] for r in older}
    assert [i for i in served if i in older_ids] == [r["id"] for r in expected]
    # rows created after the walk began are newer than its position: a new walk shows them
    assert set(served) == older_ids
    fresh = await history.list_for_user(USER, ImageQuery(limit=1))
    assert fresh.items[0].created_at == BASE_TIME + timedelta(seconds=newer - 1)


@pytest.mark.parametrize(
    "query",
    [
        ImageQuery(text="torch", limit=3),
        ImageQuery(text="rare", limit=2),
        ImageQuery(text="tocha", limit=3, sort="oldest"),
        ImageQuery(prop="torch", limit=4),
        ImageQuery(prop="clay-cup", text="rare", limit=1, sort="oldest"),
        ImageQuery(text="nothing like this", limit=5),
    ],
)
async def test_windowed_scans_serve_the_same_pages(
    db_engine: AsyncEngine, engine: PromptEngine, store: SqlJobStore, query: ImageQuery
) -> None:
    # matches are sparse and uneven, with ties on created_at, so pages cross window edges
    rows = []
    for i in range(60):
        props = ("torch", "clay-cup", "wall-torch", "clay-cup,torch", "")[i % 5]
        prompt = "a rare torch" if i % 11 == 0 else ("a rare find" if i % 7 == 0 else "plain")
        rows.append(row(i // 2, props=props, prompt=prompt, pose="arms-crossed"))
    rows.append(row(3, pose="lighting-the-torch"))
    await add(store, *rows, row(70, user_id="user-2", prompt="a rare torch"))
    walks = []
    for windows, first in ((True, 2), (True, 1), (False, 1)):
        search = SqlImageSearch(db_engine, windows=windows, first_window=first)
        try:
            walks.append([job.id for job in await walk(ImageHistory(search, engine), query)])
        finally:
            search.close()
    assert walks[0] == walks[1] == walks[2]
    history = ImageHistory(SqlImageSearch(db_engine), engine)
    matching = history.matching_options(query.text) if query.text else {}

    def matches(r: dict[str, Any]) -> bool:
        props = r["props"].split(",")
        if query.prop is not None and query.prop not in props:
            return False
        if query.text is None:
            return True
        return (
            query.text.lower() in (r["prompt"] or "").lower()
            or r["pose"] in matching.get("pose", [])
            or any(p in matching.get("prop", []) for p in props)
        )

    expected = sorted(
        (r for r in rows if matches(r)),
        key=lambda r: (r["created_at"], r["id"]),
        reverse=query.sort == "newest",
    )
    assert walks[0] == [r["id"] for r in expected]
    history.close()


# -- rejections ----------------------------------------------------------------------------------


class RecordingSearch:
    """Remembers whether it was asked: a rejected query must not reach the database."""

    def __init__(self) -> None:
        self.calls = 0

    async def search(
        self, user_id: str, query: ImageQuery, *, matching_options: Mapping[str, Sequence[str]]
    ) -> ImagePage:
        self.calls += 1
        return ImagePage([], None)


def cursor_of(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "%%%%",
        "e30",  # {}
        cursor_of({"s": "newest", "t": "yesterday", "i": uuid.uuid4().hex}),
        cursor_of({"s": "newest", "t": "2026-11-01T12:00:00", "i": uuid.uuid4().hex}),
        cursor_of({"s": "newest", "t": "2026-11-01T12:00:00+00:00", "i": "x"}),
        cursor_of({"s": "sideways", "t": "2026-11-01T12:00:00+00:00", "i": uuid.uuid4().hex}),
        cursor_of(["newest"]),
        "A" * 400,
        cursor_of({"s": "newest", "t": "2026-11-01T12:00:00+00:00", "i": "' OR 1=1 --"}),
    ],
)
async def test_malformed_cursor_is_rejected(
    history: ImageHistory, store: SqlJobStore, cursor: str
) -> None:
    await add(store, row(1))
    with pytest.raises(InvalidParametersError) as error:
        await history.list_for_user(USER, ImageQuery(cursor=cursor))
    assert codes(error) == [("invalid_cursor", "cursor")]


async def test_cursor_of_the_other_sort_is_rejected(
    history: ImageHistory, store: SqlJobStore
) -> None:
    await add(store, *(row(i) for i in range(3)))
    page = await history.list_for_user(USER, ImageQuery(limit=1, sort="oldest"))
    assert page.next_cursor is not None
    with pytest.raises(InvalidParametersError) as error:
        await history.list_for_user(USER, ImageQuery(limit=1, cursor=page.next_cursor))
    assert codes(error) == [("invalid_cursor", "cursor")]
    assert error.value.problems[0].allowed == ("oldest",)


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, 10_000])
async def test_limit_out_of_range_is_rejected(limit: int, engine: PromptEngine) -> None:
    search = RecordingSearch()
    with pytest.raises(InvalidParametersError) as error:
        await ImageHistory(search, engine).list_for_user(USER, ImageQuery(limit=limit))
    assert codes(error) == [("out_of_range", "limit")]
    assert error.value.problems[0].allowed == (f"1..{MAX_LIMIT}",)
    assert search.calls == 0


async def test_unknown_options_name_the_allowed_values(engine: PromptEngine) -> None:
    search = RecordingSearch()
    query = ImageQuery(
        pose="arms-crosed",
        outfit="tuxedo",
        footwear="skates",
        prop="lightsaber",
        frame="onboarding/nope",
        provider="dall-e",
    )
    with pytest.raises(InvalidParametersError) as error:
        await ImageHistory(search, engine).list_for_user(USER, query)
    assert codes(error) == [
        ("unknown_option", "pose"),
        ("unknown_option", "outfit"),
        ("unknown_option", "footwear"),
        ("unknown_option", "prop"),
        ("unknown_frame", "frame"),
        ("unknown_provider", "provider"),
    ]
    pose = error.value.problems[0]
    assert "arms-crossed" in pose.allowed
    assert pose.suggestion == "arms-crossed"
    assert "onboarding/training" in error.value.problems[4].allowed
    assert "preview" in error.value.problems[5].allowed
    assert search.calls == 0


async def test_dates_in_the_wrong_order_are_rejected(engine: PromptEngine) -> None:
    search = RecordingSearch()
    query = ImageQuery(created_after=BASE_TIME + timedelta(days=1), created_before=BASE_TIME)
    with pytest.raises(InvalidParametersError) as error:
        await ImageHistory(search, engine).list_for_user(USER, query)
    assert codes(error) == [("invalid_range", "created_after")]
    with pytest.raises(InvalidParametersError) as error:
        await ImageHistory(search, engine).list_for_user(
            USER, ImageQuery(created_after=BASE_TIME.replace(tzinfo=None))
        )
    assert codes(error) == [("invalid_type", "created_after")]
    assert search.calls == 0


async def test_text_too_long_or_with_control_characters_is_rejected(engine: PromptEngine) -> None:
    history = ImageHistory(RecordingSearch(), engine)
    with pytest.raises(InvalidParametersError) as error:
        await history.list_for_user(USER, ImageQuery(text="x" * 201))
    assert codes(error) == [("too_long", "text")]
    with pytest.raises(InvalidParametersError) as error:
        await history.list_for_user(USER, ImageQuery(text="torch\x00\u202e"))
    assert codes(error) == [("invalid_characters", "text")]


# -- from query strings --------------------------------------------------------------------------


def test_build_query_parses_strings() -> None:
    sequence_id = uuid.uuid4()
    query = build_query(
        statuses="completed, failed,completed",
        pose="arms-crossed",
        prop="torch",
        sequence_id=str(sequence_id),
        created_after="2026-11-01",
        created_before="2026-11-02T09:30:00-03:00",
        text="tocha",
        sort="oldest",
        limit="20",
        cursor="",
        frame=None,
    )
    assert query.statuses == (JobStatus.COMPLETED, JobStatus.FAILED)
    assert query.sequence_id == sequence_id
    assert query.created_after == BASE_TIME.replace(hour=0)
    assert query.created_before == BASE_TIME.replace(day=2, hour=12, minute=30)
    assert (query.sort, query.limit, query.cursor, query.frame) == ("oldest", 20, None, None)
    assert build_query() == ImageQuery()


def test_build_query_reports_every_problem_at_once() -> None:
    with pytest.raises(InvalidParametersError) as error:
        build_query(
            statuses="done,completed",
            limit="lots",
            created_after="yesterday",
            created_before="2026-13-01",
            sequence_id="42",
            sort="random",
            cursor="abc",
            colour="red",
        )
    assert sorted(codes(error)) == [
        ("invalid_choice", "sort"),
        ("invalid_choice", "statuses"),
        ("invalid_type", "created_after"),
        ("invalid_type", "created_before"),
        ("invalid_type", "limit"),
        ("invalid_type", "sequence_id"),
        ("unknown_field", "colour"),
    ]
    statuses = next(p for p in error.value.problems if p.field == "statuses")
    assert "completed" in statuses.allowed
    assert statuses.suggestion is None or statuses.suggestion in statuses.allowed


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"limit": "201"}, ("out_of_range", "limit")),
        ({"limit": "1_0"}, ("invalid_type", "limit")),
        ({"limit": "-3"}, ("out_of_range", "limit")),
        (
            {"created_after": "2026-11-02", "created_before": "2026-11-01"},
            ("invalid_range", "created_after"),
        ),
        ({"cursor": "!!"}, ("invalid_cursor", "cursor")),
    ],
)
def test_build_query_checks_ranges(raw: dict[str, str], expected: tuple[str, str]) -> None:
    with pytest.raises(InvalidParametersError) as error:
        build_query(**raw)
    assert codes(error) == [expected]


def test_an_offset_mangled_by_a_url_gets_a_hint() -> None:
    with pytest.raises(InvalidParametersError) as error:
        build_query(created_after="2026-11-01T12:00:00 00:00")
    assert codes(error) == [("invalid_type", "created_after")]
    assert "%2B" in error.value.problems[0].message


def test_parse_adds_the_catalogue_checks(engine: PromptEngine) -> None:
    history = ImageHistory(RecordingSearch(), engine)
    with pytest.raises(InvalidParametersError) as error:
        history.parse(limit="500", pose="flying", provider="openai")
    assert codes(error) == [("out_of_range", "limit"), ("unknown_option", "pose")]
    assert history.parse(pose="arms-crossed", limit="5") == ImageQuery(pose="arms-crossed", limit=5)


# -- hostile input -------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", INJECTIONS)
async def test_injection_strings_are_only_data(
    history: ImageHistory,
    search: SqlImageSearch,
    store: SqlJobStore,
    db_engine: AsyncEngine,
    attack: str,
) -> None:
    [mine] = await add(store, row(1))
    [theirs] = await add(store, row(2, user_id="user-2", prompt=f"about {attack}"))
    assert await listing(history, text=attack) == []
    with pytest.raises(InvalidParametersError) as error:
        await history.list_for_user(USER, ImageQuery(pose=attack, frame=attack, provider=attack))
    assert [code for code, _field in codes(error)] == [
        "unknown_option",
        "unknown_frame",
        "unknown_provider",
    ]
    # straight to the store, past the service's checks
    raw = ImageQuery(
        pose=attack, outfit=attack, prop=attack, frame=attack, provider=attack, text=attack
    )
    page = await search.search(USER, raw, matching_options={"pose": [attack], "prop": [attack]})
    assert page.items == []
    assert ids(await search.search(attack, ImageQuery(), matching_options={})) == []
    assert ids(await search.search("user-2", ImageQuery(text=attack), matching_options={})) == [
        theirs
    ]
    async with db_engine.connect() as connection:
        count = (await connection.execute(select(func.count()).select_from(ImageRow))).scalar()
    assert count == 2
    assert await listing(history) == [mine]


# -- wiring --------------------------------------------------------------------------------------


async def test_the_runtime_serves_the_history(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path, storage_url="memory://")
    runtime = await open_runtime(build_container(settings))
    try:
        [image_id] = await add(runtime.jobs, row(1, pose="arms-crossed"))
        page = await runtime.history.list_for_user(USER, build_query(text="braços cruzados"))
        assert ids(page) == [image_id]
    finally:
        await runtime.aclose()
