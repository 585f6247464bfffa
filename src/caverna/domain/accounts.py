"""Accounts, API keys and the audit trail, as the rest of the code sees them.

Users are named by short, stable, URL-safe ids (they appear in storage keys, logs and URLs),
so an id is checked once, when the user is created, and never rewritten. A key's secret is
never part of these records: only its display prefix is, so nothing here can leak a token.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from caverna.domain.problems import InvalidParametersError, Problem, ProblemCode

USER_ID_MAX = 64
KEY_NAME_MAX = 100
# a letter or digit first: '..' or '-x' would read as a path or an option where ids are shown
_USER_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
# control characters, and the invisible ones that change how the text around them reads in a
# table (zero-width characters, bidi controls such as U+202E, the byte order mark)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class AuditAction(StrEnum):
    """Stable names of audited events; clients filter on them, so renaming one breaks them."""

    AUTH_FAILED = "auth_failed"
    KEY_CREATED = "key_created"
    KEY_REVOKED = "key_revoked"
    USER_CREATED = "user_created"
    USER_UPDATED = "user_updated"
    QUOTA_CHANGED = "quota_changed"
    IMAGE_DELETED = "image_deleted"
    IMAGE_CANCELLED = "image_cancelled"
    BULK_STARTED = "bulk_started"
    BULK_FINISHED = "bulk_finished"
    QUOTA_REJECTED = "quota_rejected"
    RATE_LIMITED = "rate_limited"
    SAFETY_REJECTED = "safety_rejected"
    SHARE_CREATED = "share_created"
    SHARE_REVOKED = "share_revoked"
    ADMIN_BOOTSTRAP = "admin_bootstrap"
    STORAGE_GC = "storage_gc"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user, their role, and the key they used (None outside the API)."""

    user_id: str
    role: Role
    key_id: uuid.UUID | None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user; a quota of None means no limit."""

    id: str
    display_name: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None
    quota_daily_images: int | None
    quota_monthly_usd: float | None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as it may be shown to anyone allowed to see it: the prefix, never the secret."""

    id: uuid.UUID
    user_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: `token` exists only here, once; the database keeps its hash."""

    key: KeyInfo
    token: str = field(repr=False)
    user_created: bool


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: AuditAction
    target: str | None
    details: dict[str, Any]


def check_user_id(user_id: str, field_name: str = "user_id") -> str:
    """The id itself when valid; otherwise a rejection that says exactly what is allowed.

    Upper case is refused rather than folded: two spellings of one id would otherwise name the
    same user in some places (lookups) and different ones in others (storage keys, logs).
    """
    allowed = (
        f"1 to {USER_ID_MAX} characters: lowercase letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )
    problem: Problem | None = None
    if len(user_id) > USER_ID_MAX:
        problem = Problem(ProblemCode.TOO_LONG, field_name, f"too long; use {allowed}")
    elif not _USER_ID.fullmatch(user_id):
        lowered = user_id.lower()
        problem = Problem(
            ProblemCode.INVALID_CHARACTERS,
            field_name,
            f"'{user_id}' is not a valid user id; use {allowed}",
            suggestion=lowered if lowered != user_id and _USER_ID.fullmatch(lowered) else None,
        )
    if problem is not None:
        raise InvalidParametersError((problem,), "invalid user id")
    return user_id


def parse_role(value: str, field_name: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidParametersError(
            (
                Problem(
                    ProblemCode.INVALID_CHOICE,
                    field_name,
                    f"unknown role '{value}'",
                    allowed=tuple(role.value for role in Role),
                ),
            ),
            "invalid role",
        ) from None


def parse_action(value: str, field_name: str = "action") -> AuditAction:
    try:
        return AuditAction(value)
    except ValueError:
        raise InvalidParametersError(
            (
                Problem(
                    ProblemCode.INVALID_CHOICE,
                    field_name,
                    f"unknown audit action '{value}'",
                    allowed=tuple(action.value for action in AuditAction),
                ),
            ),
            "invalid audit action",
        ) from None


def check_key_name(name: str, field_name: str = "name") -> str:
    """Key labels are shown in tables and logs, so they stay short and on one line."""
    problem: Problem | None = None
    if len(name) > KEY_NAME_MAX:
        problem = Problem(
            ProblemCode.TOO_LONG, field_name, f"at most {KEY_NAME_MAX} characters, got {len(name)}"
        )
    elif _CONTROL.search(name):
        problem = Problem(
            ProblemCode.INVALID_CHARACTERS, field_name, "control characters are not allowed"
        )
    if problem is not None:
        raise InvalidParametersError((problem,), "invalid key name")
    return name
