"""Account and audit stores on SQLAlchemy, one implementation for SQLite and PostgreSQL.

Races are settled by the database, not by reads in Python: a user is inserted with
ON CONFLICT DO NOTHING on its primary key, so of two concurrent first keys (or first-admin
bootstraps) exactly one creates the user. Read-then-write changes lock the row first
(FOR UPDATE on PostgreSQL; on SQLite every write transaction holds the write lock from BEGIN).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, and_, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from caverna.db.engine import TransactionRunner
from caverna.db.models import ApiKey, AuditRow, User
from caverna.domain.accounts import AuditAction, AuditEntry, KeyInfo, Role, UserInfo

USERS: Table = User.__table__  # type: ignore[assignment]
KEYS: Table = ApiKey.__table__  # type: ignore[assignment]
AUDIT: Table = AuditRow.__table__  # type: ignore[assignment]

_USER_COLUMNS = [c.label(f"u_{c.name}") for c in USERS.c]


def to_user(row: Any, prefix: str = "") -> UserInfo:
    def value(name: str) -> Any:
        return getattr(row, prefix + name)

    return UserInfo(
        id=value("id"),
        display_name=value("display_name"),
        role=Role(value("role")),
        created_at=value("created_at"),
        disabled_at=value("disabled_at"),
        quota_daily_images=value("quota_daily"),
        quota_monthly_usd=value("quota_monthly_usd"),
    )


def to_key(row: Any) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def to_entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=int(row.id),
        at=row.at,
        actor=row.actor,
        action=AuditAction(row.action),
        target=row.target,
        details=dict(row.details or {}),
    )


def _user_values(user: UserInfo) -> dict[str, Any]:
    return {
        "id": user.id,
        "display_name": user.display_name,
        "role": user.role.value,
        "created_at": user.created_at,
        "disabled_at": user.disabled_at,
        "quota_daily": user.quota_daily_images,
        "quota_monthly_usd": user.quota_monthly_usd,
    }


def _key_values(key: KeyInfo, key_hash: str) -> dict[str, Any]:
    return {
        "id": key.id,
        "user_id": key.user_id,
        "name": key.name,
        "prefix": key.prefix,
        "key_hash": key_hash,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


def _insert_user_if_absent(connection: Connection, user: UserInfo) -> bool:
    """True when this statement created the user; False when the id already existed."""
    dialect_insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = (
        dialect_insert(USERS)
        .values(_user_values(user))
        .on_conflict_do_nothing(index_elements=[USERS.c.id])
        .returning(USERS.c.id)
    )
    return connection.execute(statement).first() is not None


def _locked_user(connection: Connection, user_id: str) -> UserInfo | None:
    row = connection.execute(select(USERS).where(USERS.c.id == user_id).with_for_update()).first()
    return to_user(row) if row else None


class SqlAccountStore:
    def __init__(self, db: TransactionRunner) -> None:
        self._db = db

    async def add_key(self, user: UserInfo, key: KeyInfo, key_hash: str) -> bool:
        def run(connection: Connection) -> bool:
            created = _insert_user_if_absent(connection, user)
            connection.execute(insert(KEYS).values(_key_values(key, key_hash)))
            return created

        return await self._db.write(run)

    async def add_first_admin(self, user: UserInfo, key: KeyInfo, key_hash: str) -> bool:
        def run(connection: Connection) -> bool:
            if connection.execute(select(USERS.c.id).limit(1)).first() is not None:
                return False
            # two empty-database starters both get here on PostgreSQL; the primary key lets
            # one insert and makes the other's insert a no-op once the first commits
            if not _insert_user_if_absent(connection, user):
                return False
            connection.execute(insert(KEYS).values(_key_values(key, key_hash)))
            return True

        return await self._db.write(run)

    async def find_key(self, key_hash: str) -> tuple[KeyInfo, UserInfo, str] | None:
        query = (
            select(KEYS, *_USER_COLUMNS)
            .join(USERS, USERS.c.id == KEYS.c.user_id)
            .where(KEYS.c.key_hash == key_hash)
        )

        def run(connection: Connection) -> tuple[KeyInfo, UserInfo, str] | None:
            row = connection.execute(query).first()
            if row is None:
                return None
            return to_key(row), to_user(row, "u_"), str(row.key_hash)

        return await self._db.read(run)

    async def touch_key(self, key_id: uuid.UUID, now: datetime, stale_before: datetime) -> None:
        statement = (
            update(KEYS)
            .where(
                KEYS.c.id == key_id,
                or_(KEYS.c.last_used_at.is_(None), KEYS.c.last_used_at < stale_before),
            )
            .values(last_used_at=now)
        )
        await self._db.write(lambda connection: connection.execute(statement))

    async def revoke_key(self, key_id: uuid.UUID, now: datetime) -> tuple[KeyInfo, bool] | None:
        def run(connection: Connection) -> tuple[KeyInfo, bool] | None:
            row = connection.execute(
                select(KEYS).where(KEYS.c.id == key_id).with_for_update()
            ).first()
            if row is None:
                return None
            key = to_key(row)
            if key.revoked:
                return key, False
            connection.execute(update(KEYS).where(KEYS.c.id == key_id).values(revoked_at=now))
            return replace(key, revoked_at=now), True

        return await self._db.write(run)

    async def get_user(self, user_id: str) -> UserInfo | None:
        query = select(USERS).where(USERS.c.id == user_id)

        def run(connection: Connection) -> UserInfo | None:
            row = connection.execute(query).first()
            return to_user(row) if row else None

        return await self._db.read(run)

    async def list_users(self) -> list[UserInfo]:
        query = select(USERS).order_by(USERS.c.id)
        return await self._db.read(
            lambda connection: [to_user(row) for row in connection.execute(query).all()]
        )

    async def list_keys(self, user_id: str | None) -> list[KeyInfo]:
        query = select(KEYS).order_by(KEYS.c.created_at, KEYS.c.id)
        if user_id is not None:
            query = query.where(KEYS.c.user_id == user_id)
        return await self._db.read(
            lambda connection: [to_key(row) for row in connection.execute(query).all()]
        )

    async def set_quota(
        self, user_id: str, daily_images: int | None, monthly_usd: float | None
    ) -> tuple[UserInfo, UserInfo] | None:
        def run(connection: Connection) -> tuple[UserInfo, UserInfo] | None:
            before = _locked_user(connection, user_id)
            if before is None:
                return None
            connection.execute(
                update(USERS)
                .where(USERS.c.id == user_id)
                .values(quota_daily=daily_images, quota_monthly_usd=monthly_usd)
            )
            after = replace(before, quota_daily_images=daily_images, quota_monthly_usd=monthly_usd)
            return before, after

        return await self._db.write(run)

    async def set_disabled(
        self, user_id: str, disabled: bool, now: datetime
    ) -> tuple[UserInfo, UserInfo] | None:
        def run(connection: Connection) -> tuple[UserInfo, UserInfo] | None:
            before = _locked_user(connection, user_id)
            if before is None:
                return None
            disabled_at = (before.disabled_at or now) if disabled else None
            if disabled_at != before.disabled_at:
                connection.execute(
                    update(USERS).where(USERS.c.id == user_id).values(disabled_at=disabled_at)
                )
            return before, replace(before, disabled_at=disabled_at)

        return await self._db.write(run)

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> bool:
        statement = update(USERS).where(USERS.c.id == user_id).values(password_hash=password_hash)
        return await self._db.write(lambda connection: bool(connection.execute(statement).rowcount))

    async def password_hash(self, user_id: str) -> tuple[UserInfo, str | None] | None:
        query = select(USERS).where(USERS.c.id == user_id)

        def run(connection: Connection) -> tuple[UserInfo, str | None] | None:
            row = connection.execute(query).first()
            return (to_user(row), row.password_hash) if row else None

        return await self._db.read(run)


class SqlAuditStore:
    def __init__(self, db: TransactionRunner) -> None:
        self._db = db

    async def append(
        self,
        at: datetime,
        actor: str,
        action: AuditAction,
        target: str | None,
        details: dict[str, Any],
    ) -> int:
        statement = (
            insert(AUDIT)
            .values(at=at, actor=actor, action=action.value, target=target, details=details)
            .returning(AUDIT.c.id)
        )
        return await self._db.write(
            lambda connection: int(connection.execute(statement).scalar_one())
        )

    async def query(
        self,
        *,
        action: AuditAction | None,
        actor: str | None,
        target: str | None,
        since: datetime | None,
        until: datetime | None,
        before: tuple[datetime, int] | None,
        limit: int,
    ) -> list[AuditEntry]:
        conditions: list[ColumnElement[bool]] = []
        if action is not None:
            conditions.append(AUDIT.c.action == action.value)
        if actor is not None:
            conditions.append(AUDIT.c.actor == actor)
        if target is not None:
            conditions.append(AUDIT.c.target == target)
        if since is not None:
            conditions.append(AUDIT.c.at >= since)
        if until is not None:
            conditions.append(AUDIT.c.at < until)
        if before is not None:
            at, entry_id = before
            conditions.append(or_(AUDIT.c.at < at, and_(AUDIT.c.at == at, AUDIT.c.id < entry_id)))
        query = (
            select(AUDIT)
            .where(*conditions)
            .order_by(AUDIT.c.at.desc(), AUDIT.c.id.desc())
            .limit(limit)
        )
        return await self._db.read(
            lambda connection: [to_entry(row) for row in connection.execute(query).all()]
        )
