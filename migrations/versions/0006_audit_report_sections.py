"""Each audit's report sections, written by the worker next to its results.

A section (title, a one-line reading, tables of formatted cells, the figures to show with their captions)
comes from the check's module in the engine, which the API never imports; storing it lets the service
render any check's part of a report without knowing the check. Audits finished before this revision have
none (NULL): the report falls back to service/reports/legacy.py for them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.add_column(sa.Column("sections", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.drop_column("sections")
