"""Job dependencies: a job may be created before its inputs are ready and wait for them.

``jobs.waiting_for`` lists the inputs (resource ids) a ``waiting`` job still waits for; it is empty for
every other job, those created before this revision included. ``state`` is a plain string column, so the
new ``waiting`` state needs no schema change of its own.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("waiting_for", JSON, nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("waiting_for")
