"""The bulk operation store on SQLite and PostgreSQL: one runner at a time, takeover on expiry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from caverna.db.bulk import SqlBulkStore
from caverna.services.bulk import BulkInfo

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def operation() -> BulkInfo:
    return BulkInfo(
        id=uuid.uuid4(),
        actor="admin",
        action="delete",
        filters={"pose": "training"},
        status="queued",
        total=0,
        done=0,
        failed=0,
        error=None,
        position=None,
        created_at=NOW,
        started_at=None,
        finished_at=None,
    )


async def test_claim_save_takeover_and_finish(db_engine: AsyncEngine) -> None:
    store = SqlBulkStore(db_engine)
    try:
        op = operation()
        await store.add(op)
        first = await store.claim("a", NOW, NOW + timedelta(seconds=60))
        assert first is not None
        assert first.id == op.id
        assert first.status == "running"
        assert await store.claim("b", NOW, NOW + timedelta(seconds=60)) is None  # leased
        position = {"counted": True, "user": 0, "cursor": "abc"}
        saved = await store.save(
            op.id,
            "a",
            total=10,
            done=3,
            failed=1,
            position=position,
            lease_until=NOW + timedelta(seconds=60),
        )
        assert saved
        later = NOW + timedelta(seconds=120)  # a's lease ran out: b takes over where a was
        taken = await store.claim("b", later, later + timedelta(seconds=60))
        assert taken is not None
        assert (taken.total, taken.done, taken.failed) == (10, 3, 1)
        assert taken.position == position
        assert taken.started_at == NOW
        stale = await store.save(
            op.id, "a", total=10, done=9, failed=1, position=None, lease_until=later
        )
        assert not stale  # the old runner can no longer write
        assert await store.finish(op.id, "b", "completed", None, later)
        done = await store.get(op.id)
        assert done is not None
        assert done.status == "completed"
        assert done.finished_at == later
        assert done.progress == 1.0
        assert [item.id for item in await store.recent(5)] == [op.id]
    finally:
        store.close()
