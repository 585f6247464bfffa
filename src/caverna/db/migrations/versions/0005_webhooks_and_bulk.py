"""Completion webhooks on images, and admin bulk operations with progress

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("generated_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_url", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("webhook_status", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("webhook_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("webhook_next_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("webhook_error", sa.Text(), nullable=True))
        batch_op.create_index(
            "ix_images_webhooks", ["webhook_status", "webhook_next_at"], unique=False
        )
    op.create_table(
        "bulk_operations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("position", sa.JSON(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_operations")),
    )
    with op.batch_alter_table("bulk_operations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bulk_operations_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bulk_operations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bulk_operations_status"))
    op.drop_table("bulk_operations")
    with op.batch_alter_table("generated_images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_webhooks")
        batch_op.drop_column("webhook_error")
        batch_op.drop_column("webhook_next_at")
        batch_op.drop_column("webhook_attempts")
        batch_op.drop_column("webhook_status")
        batch_op.drop_column("callback_url")
