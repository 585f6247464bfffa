"""Brand consistency on the image row: the report, its score, the prompt variant, re-rolls

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # every column is nullable: images completed before this revision simply have no report
    with op.batch_alter_table("generated_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consistency", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("consistency_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("phash", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("variant", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("reroll_of", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("reroll_attempt", sa.Integer(), nullable=True))
        batch_op.create_index(
            "ix_images_analytics",
            ["template_version", "provider", "variant", "review_status", "consistency_score"],
            unique=False,
        )
        batch_op.create_index("ix_images_reroll_of", ["reroll_of"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("generated_images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_reroll_of")
        batch_op.drop_index("ix_images_analytics")
        batch_op.drop_column("reroll_attempt")
        batch_op.drop_column("reroll_of")
        batch_op.drop_column("variant")
        batch_op.drop_column("phash")
        batch_op.drop_column("consistency_score")
        batch_op.drop_column("consistency")
