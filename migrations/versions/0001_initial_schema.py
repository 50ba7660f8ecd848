"""Initial schema: API keys, jobs, datasets, models, audits, artifacts, idempotency records.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _resource_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_api_keys_owner", "api_keys", ["owner"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("resource_type", sa.String(20), nullable=False),
        sa.Column("resource_id", sa.String(40), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(40), nullable=True),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at", "id"])
    op.create_index("ix_jobs_state_created", "jobs", ["state", "created_at"])
    op.create_index("ix_jobs_resource_id", "jobs", ["resource_id"])

    op.create_table(
        "datasets",
        *_resource_columns(),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("description", JSON, nullable=True),
    )
    op.create_index("ix_datasets_owner_created", "datasets", ["owner", "created_at", "id"])

    op.create_table(
        "models",
        *_resource_columns(),
        sa.Column("dataset_id", sa.String(40), nullable=False),
        sa.Column("architecture", JSON, nullable=False),
        sa.Column("training", JSON, nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("input_shape", JSON, nullable=True),
        sa.Column("num_classes", sa.Integer(), nullable=True),
        sa.Column("result", JSON, nullable=True),
    )
    op.create_index("ix_models_owner_created", "models", ["owner", "created_at", "id"])
    op.create_index("ix_models_dataset_id", "models", ["dataset_id"])

    op.create_table(
        "audits",
        *_resource_columns(),
        sa.Column("model_id", sa.String(40), nullable=False),
        sa.Column("dataset_id", sa.String(40), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("verdict", sa.Text(), nullable=True),
        sa.Column("verdict_code", sa.String(40), nullable=True),
        sa.Column("results", JSON, nullable=True),
    )
    op.create_index("ix_audits_owner_created", "audits", ["owner", "created_at", "id"])
    op.create_index("ix_audits_model_id", "audits", ["model_id"])
    op.create_index("ix_audits_dataset_id", "audits", ["dataset_id"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("resource_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_artifacts_resource_id", "artifacts", ["resource_id"])
    op.create_index("ix_artifacts_sha256", "artifacts", ["sha256"])

    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("location", sa.String(300), nullable=True),
        sa.Column("response", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("idempotency_keys", "artifacts", "audits", "models", "datasets", "jobs", "api_keys"):
        op.drop_table(table)
