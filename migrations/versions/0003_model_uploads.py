"""Model uploads: where a model came from, the SHA-256 of its uploaded file, its input normalization.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("source", sa.String(20), nullable=False, server_default="train"))
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("normalization", JSON, nullable=True))
    op.create_index("ix_models_owner_sha256", "models", ["owner", "sha256"])


def downgrade() -> None:
    op.drop_index("ix_models_owner_sha256", table_name="models")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("normalization")
        batch.drop_column("sha256")
        batch.drop_column("source")
