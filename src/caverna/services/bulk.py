"""Admin bulk operations: delete or regenerate every image matching a filter, in the background.

An operation is a row: whoever starts it only inserts it, and any process running workers takes
it under a lease and walks the matching images page by page (newest first, keyset cursors, so
images created meanwhile — including the ones a regeneration makes — are never visited). After
each page the position and counts are saved: progress is visible from every API process, and a
runner that dies is replaced by another that resumes at the last saved page (at most one page
is handled twice: a deletion twice is harmless, a regeneration twice makes one extra image).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from caverna.domain.accounts import AuditAction, Principal, Role
from caverna.domain.listing import ImageQuery
from caverna.domain.problems import InvalidParametersError, Problem, ProblemCode
from caverna.domain.suggest import closest
from caverna.services.accounts import AuditLog
from caverna.services.image_actions import ImageActions, ImageNotFound
from caverna.services.images import ImageHistory

log = logging.getLogger(__name__)

BULK_ACTIONS: tuple[str, ...] = ("delete", "regenerate")
# filter names as the history endpoint spells them -> the history query's own names
FILTERS: dict[str, str] = {
    "status": "statuses",
    "pose": "pose",
    "outfit": "outfit",
    "footwear": "footwear",
    "prop": "prop",
    "frame": "frame",
    "provider": "provider",
    "sequence": "sequence_id",
    "created_after": "created_after",
    "created_before": "created_before",
    "q": "text",
}
PAGE = 200


@dataclass(frozen=True, slots=True)
class BulkInfo:
    id: uuid.UUID
    actor: str
    action: str
    filters: dict[str, Any]
    status: str  # queued, running, completed, failed
    total: int
    done: int
    failed: int
    error: str | None
    position: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def progress(self) -> float:
        if self.status == "completed":
            return 1.0
        return round((self.done + self.failed) / self.total, 4) if self.total else 0.0


class BulkStore(Protocol):
    async def add(self, operation: BulkInfo) -> None: ...

    async def get(self, operation_id: uuid.UUID) -> BulkInfo | None: ...

    async def recent(self, limit: int) -> list[BulkInfo]: ...

    async def claim(self, owner: str, now: datetime, lease_until: datetime) -> BulkInfo | None:
        """A queued operation, or a running one whose runner's lease expired."""

    async def save(
        self,
        operation_id: uuid.UUID,
        owner: str,
        *,
        total: int,
        done: int,
        failed: int,
        position: dict[str, Any] | None,
        lease_until: datetime,
    ) -> bool:
        """Progress, only while the owner still holds the lease."""

    async def finish(
        self, operation_id: uuid.UUID, owner: str, status: str, error: str | None, now: datetime
    ) -> bool: ...


class LeaseLost(Exception):
    """Another runner took the operation over."""


class BulkOperations:
    def __init__(
        self,
        *,
        store: BulkStore,
        history: ImageHistory,
        actions: ImageActions,
        audit: AuditLog,
        user_ids: Callable[[], Awaitable[list[str]]],
        clock: Callable[[], datetime],
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.history = history
        self.actions = actions
        self.audit = audit
        self.user_ids = user_ids
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.owner = f"bulk-{uuid.uuid4().hex[:12]}"

    def parse(self, action: str, filters: Mapping[str, Any]) -> tuple[str | None, ImageQuery]:
        """The user the filter names (None: everyone) and the query, or every problem at once."""
        problems: list[Problem] = []
        if action not in BULK_ACTIONS:
            problems.append(
                Problem(
                    ProblemCode.INVALID_CHOICE,
                    "action",
                    f"'{action}' is not a bulk action",
                    allowed=BULK_ACTIONS,
                    suggestion=closest(action, BULK_ACTIONS),
                )
            )
        allowed = ("user", *FILTERS)
        raw: dict[str, str | None] = {}
        user: str | None = None
        for name, value in filters.items():
            if name not in allowed:
                problems.append(
                    Problem(
                        ProblemCode.UNKNOWN_FIELD,
                        f"filters.{name}",
                        f"'{name}' is not a filter",
                        allowed=allowed,
                        suggestion=closest(name, allowed),
                    )
                )
            elif value is not None and not isinstance(value, str):
                problems.append(
                    Problem(ProblemCode.INVALID_TYPE, f"filters.{name}", "filters are strings")
                )
            elif name == "user":
                user = value or None
            else:
                raw[FILTERS[name]] = value
        try:
            query = self.history.parse(**raw, limit=str(PAGE))
        except InvalidParametersError as exc:
            renamed = {value: key for key, value in FILTERS.items()}
            problems.extend(
                replace(p, field=f"filters.{renamed.get(p.field, p.field)}") for p in exc.problems
            )
            query = ImageQuery()
        if problems:
            raise InvalidParametersError(tuple(problems), "the bulk operation was rejected")
        return user, query

    async def start(self, actor: Principal, action: str, filters: Mapping[str, Any]) -> BulkInfo:
        self.parse(action, filters)
        operation = BulkInfo(
            id=uuid.uuid4(),
            actor=actor.user_id,
            action=action,
            filters=dict(filters),
            status="queued",
            total=0,
            done=0,
            failed=0,
            error=None,
            position=None,
            created_at=self.clock(),
            started_at=None,
            finished_at=None,
        )
        await self.store.add(operation)
        await self.audit.record(
            actor.user_id,
            AuditAction.BULK_STARTED,
            str(operation.id),
            operation=action,
            filters=dict(filters),
        )
        return operation

    async def get(self, operation_id: uuid.UUID) -> BulkInfo | None:
        return await self.store.get(operation_id)

    async def recent(self, limit: int = 20) -> list[BulkInfo]:
        return await self.store.recent(limit)

    async def run(self, stop: asyncio.Event) -> None:
        """Take and run operations until `stop` is set."""
        while not stop.is_set():
            try:
                ran = await self.run_once()
            except Exception:  # a broken operation must not end the loop of a worker process
                log.exception("bulk operation runner failed")
                ran = False
            if not ran:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def run_once(self) -> bool:
        now = self.clock()
        operation = await self.store.claim(self.owner, now, now + self.lease)
        if operation is None:
            return False
        try:
            await self._execute(operation)
        except LeaseLost:
            return True
        except Exception as exc:
            await self.store.finish(operation.id, self.owner, "failed", repr(exc), self.clock())
            await self.audit.record(
                operation.actor, AuditAction.BULK_FINISHED, str(operation.id), status="failed"
            )
            return True
        return True

    async def _execute(self, operation: BulkInfo) -> None:
        user, query = self.parse(operation.action, operation.filters)
        users = [user] if user is not None else sorted(await self.user_ids())
        position = dict(operation.position or {})
        total = operation.total
        if not position.get("counted"):
            total = 0
            for owner in users:
                total += await self._count(owner, query)
            position = {"counted": True, "user": 0, "cursor": None}
            await self._save(operation, total, operation.done, operation.failed, position)
        done, failed = operation.done, operation.failed
        admin = Principal(operation.actor, Role.ADMIN, None)
        index = int(position.get("user", 0))
        cursor: str | None = position.get("cursor")
        while index < len(users):
            page = await self.history.list_for_user(users[index], replace(query, cursor=cursor))
            for job in page.items:
                try:
                    if operation.action == "delete":
                        await self.actions.delete(admin, job.id)
                    else:
                        await self.actions.regenerate(admin, job.id, "new")
                    done += 1
                except ImageNotFound:
                    done += 1  # already gone: the goal is met
                except Exception as exc:
                    failed += 1
                    log.warning("bulk %s of %s failed: %r", operation.action, job.id, exc)
            cursor = page.next_cursor
            if cursor is None:
                index += 1
            position = {"counted": True, "user": index, "cursor": cursor}
            await self._save(operation, total, done, failed, position)
        await self.store.finish(operation.id, self.owner, "completed", None, self.clock())
        await self.audit.record(
            operation.actor,
            AuditAction.BULK_FINISHED,
            str(operation.id),
            status="completed",
            done=done,
            failed=failed,
        )

    async def _count(self, user: str, query: ImageQuery) -> int:
        count = 0
        cursor: str | None = None
        while True:
            page = await self.history.list_for_user(user, replace(query, cursor=cursor))
            count += len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return count

    async def _save(
        self, operation: BulkInfo, total: int, done: int, failed: int, position: dict[str, Any]
    ) -> None:
        saved = await self.store.save(
            operation.id,
            self.owner,
            total=total,
            done=done,
            failed=failed,
            position=position,
            lease_until=self.clock() + self.lease,
        )
        if not saved:
            raise LeaseLost(str(operation.id))
