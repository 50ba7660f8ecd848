"""Each job's estimated cost (peak memory, work), computed from the request before it is queued.

The estimate is what the budget check compared with the server's limits, and what the job process's
memory limit is derived from; clients see it in ``GET /v1/jobs/{id}`` as ``estimate``. Jobs queued before
this revision have none (NULL).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("estimate", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("estimate")
