"""An index for listing one owner's jobs in one state (GET /v1/jobs?state=queued), newest first.

Without it PostgreSQL answers from (state, created_at) and filters every other owner's jobs in that state
(tests/e2e/test_query_plans.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_owner_state_created", "jobs", ["owner", "state", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_state_created", table_name="jobs")
