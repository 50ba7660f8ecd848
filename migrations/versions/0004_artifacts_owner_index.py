"""An index for an owner's storage usage: the quota check on every resource-creating request sums the
sizes of the owner's distinct blobs (service/quota.py), which this index answers on its own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_artifacts_owner_blob", "artifacts", ["owner", "sha256", "size"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_owner_blob", table_name="artifacts")
