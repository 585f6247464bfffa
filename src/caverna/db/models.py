"""Tables. One set of models and one migration history serve SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from caverna.db.types import UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16), default="user")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    quota_daily: Mapped[int | None] = mapped_column(Integer)  # images per day
    quota_monthly_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class SequenceRow(Base):
    __tablename__ = "sequences"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    pack_id: Mapped[str] = mapped_column(String(64))
    sequence_key: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class ImageRow(Base):
    __tablename__ = "generated_images"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]]
    params_hash: Mapped[str] = mapped_column(String(64))
    pack_id: Mapped[str] = mapped_column(String(64))
    pack_version: Mapped[str] = mapped_column(String(32))
    template_version: Mapped[str] = mapped_column(String(40))
    sequence_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("sequences.id", ondelete="SET NULL")
    )
    frame_id: Mapped[str | None] = mapped_column(String(120))
    frame_index: Mapped[int | None] = mapped_column(Integer)
    # denormalised for filters: the index cannot look inside JSON portably
    pose: Mapped[str] = mapped_column(String(64))
    outfit: Mapped[str] = mapped_column(String(64))
    footwear: Mapped[str] = mapped_column(String(64))
    props: Mapped[str] = mapped_column(String(200), default="")
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    delivery_format: Mapped[str] = mapped_column(String(8), default="webp")
    prompt: Mapped[str | None] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    storage_key: Mapped[str | None] = mapped_column(String(255))
    thumbnail_key: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(40))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    cost_usd: Mapped[float | None] = mapped_column(Float)
    provider_latency_ms: Mapped[float | None] = mapped_column(Float)
    attempt_log: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    # the completion webhook: pending until delivered or given up (failed)
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    webhook_status: Mapped[str | None] = mapped_column(String(16))
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    webhook_next_at: Mapped[datetime | None]
    webhook_error: Mapped[str | None] = mapped_column(Text)
    # the post-completion pass (thumbnail, analyses): pending, done or failed; NULL for rows that
    # never completed, and for rows completed before the pass existed (thumbnail made inline)
    derivatives_status: Mapped[str | None] = mapped_column(String(16))
    # an art director's verdict: approved or rejected, with a reason from the list and a note
    review_status: Mapped[str | None] = mapped_column(String(16))
    review_reason: Mapped[str | None] = mapped_column(String(64))
    review_note: Mapped[str | None] = mapped_column(Text)
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[datetime | None]
    # brand consistency (migration 0008): the report as JSON, its overall score, the perceptual
    # hash the near-duplicate check compares, the prompt variant, and the re-roll lineage
    consistency: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    consistency_score: Mapped[float | None] = mapped_column(Float)
    phash: Mapped[str | None] = mapped_column(String(16))
    variant: Mapped[str | None] = mapped_column(String(32))
    reroll_of: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reroll_attempt: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        # a user's images, newest first; keyset pagination on (created_at, id)
        Index("ix_images_user_created", "user_id", text("created_at DESC"), text("id DESC")),
        Index("ix_images_user_status_created", "user_id", "status", text("created_at DESC")),
        Index("ix_images_user_pose", "user_id", "pose", text("created_at DESC")),
        Index("ix_images_user_outfit", "user_id", "outfit", text("created_at DESC")),
        Index("ix_images_user_frame", "user_id", "frame_id", text("created_at DESC")),
        Index("ix_images_user_provider", "user_id", "provider", text("created_at DESC")),
        # the queue: oldest claimable first
        Index("ix_images_queue", "status", "next_attempt_at", "created_at"),
        Index("ix_images_lease", "status", "lease_expires_at"),
        # dedupe of identical requests
        Index("ix_images_dedupe", "params_hash", "template_version", "provider", "seed"),
        Index("ix_images_sequence", "sequence_id", "frame_index"),
        Index("ix_images_webhooks", "webhook_status", "webhook_next_at"),
        # the derivatives pass's backlog, oldest completion first
        Index("ix_images_derivatives", "derivatives_status", "completed_at"),
        # approval analytics: grouped by template and provider, reviews and scores read along
        Index(
            "ix_images_analytics",
            "template_version",
            "provider",
            "variant",
            "review_status",
            "consistency_score",
        ),
        Index("ix_images_reroll_of", "reroll_of"),
    )


class PromptCacheRow(Base):
    __tablename__ = "prompt_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    dialect: Mapped[str] = mapped_column(String(32))
    template_version: Mapped[str] = mapped_column(String(40))
    compiled: Mapped[dict[str, Any]]
    hits: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    last_hit_at: Mapped[datetime | None]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]]

    __table_args__ = (
        # the audit view filters by who acted or what was acted on, newest first
        Index("ix_audit_log_actor_at", "actor", "at"),
        Index("ix_audit_log_target_at", "target", "at"),
    )


class CounterRow(Base):
    """Process-independent counters (prompt cache hits and misses), one row per name."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)


class IdempotencyRow(Base):
    """A client's Idempotency-Key: the first request with it reserves it, later ones replay it."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    image_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(index=True)


class ShareRow(Base):
    """A public link to one image: signed in the URL, revocable here, expiring by both."""

    __tablename__ = "share_links"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    image_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class BulkOperationRow(Base):
    """An admin's operation over every image matching a filter, run in the background.

    Progress lives here, so any API process can report it; a lease lets another process take
    over an operation whose runner died.
    """

    __tablename__ = "bulk_operations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    filters: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # where the walk over matching images has got to: a runner taking over resumes there
    position: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class WebSessionRow(Base):
    """A signed-in browser: the cookie holds a random token, the table only its hash."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    last_seen_at: Mapped[datetime | None]
