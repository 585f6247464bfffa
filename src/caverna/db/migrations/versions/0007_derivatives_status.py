"""The post-completion derivatives pass (thumbnail, analyses): its status per image

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # rows completed before this revision got their thumbnail inline: NULL, nothing pending
    with op.batch_alter_table("generated_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("derivatives_status", sa.String(length=16), nullable=True))
        batch_op.create_index(
            "ix_images_derivatives", ["derivatives_status", "completed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("generated_images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_derivatives")
        batch_op.drop_column("derivatives_status")
