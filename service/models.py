"""SQLAlchemy tables. Migrations in migrations/versions create them; nothing calls ``create_all``.

Every user-visible row carries ``owner``: the owner name of the API key that created it. Queries filter on
it, so another owner's id answers 404. Resources (datasets, models, audits) hold a ``status`` that mirrors
their job's state; the job store (service/jobstore.py) keeps the two in step inside one transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (identical text ordering in SQLite, plain ``timestamp`` in PostgreSQL) and hands
    back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType, list[Any]: JSONType}

    def __init__(self, **values: Any) -> None:
        """A new row holds its columns' Python-side defaults from the start, not only once it is flushed:
        a create request's response is built from its rows before the flush that several requests share
        (service/group_commit.py)."""
        for column in self.__table__.columns:
            default = column.default
            if column.key in values or default is None or not (default.is_scalar or default.is_callable):
                continue
            values[column.key] = default.arg(None) if default.is_callable else default.arg
        type(self).registry.constructor(self, **values)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_jobs_state_created", "state", "created_at"),
        Index("ix_jobs_owner_state_created", "owner", "state", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20))
    resource_type: Mapped[str] = mapped_column(String(20))
    resource_id: Mapped[str] = mapped_column(String(40), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # {"memory_bytes": ..., "work": ..., "parts": {...}}: the budget check's estimate (service/budget.py).
    estimate: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The inputs (resource ids) a ``waiting`` job still waits for; empty once it is queued (jobstore.py).
    waiting_for: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class _Resource:
    """Columns shared by datasets, models and audits."""

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    job_id: Mapped[str] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(_Resource, Base):
    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_owner_created", "owner", "created_at", "id"),)

    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    description: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Model(_Resource, Base):
    __tablename__ = "models"
    __table_args__ = (
        Index("ix_models_owner_created", "owner", "created_at", "id"),
        Index("ix_models_owner_sha256", "owner", "sha256"),
    )

    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    architecture: Mapped[dict[str, Any]] = mapped_column(default=dict)
    training: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    input_shape: Mapped[list[Any] | None] = mapped_column(JSONType)
    num_classes: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # "train" (POST /v1/models) or "upload" (POST /v1/models/uploads: sha256 of the uploaded file, and the
    # input normalization {"mean": [...], "std": [...]} the loader applies in front of the network).
    source: Mapped[str] = mapped_column(String(20), default="train", server_default="train")
    sha256: Mapped[str | None] = mapped_column(String(64))
    normalization: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Audit(_Resource, Base):
    __tablename__ = "audits"
    __table_args__ = (Index("ix_audits_owner_created", "owner", "created_at", "id"),)

    model_id: Mapped[str] = mapped_column(String(40), index=True)
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verdict: Mapped[str | None] = mapped_column(Text)
    verdict_code: Mapped[str | None] = mapped_column(String(40))
    results: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # One report section per check (sbengine/checks/base.py), stored by the worker; NULL before revision 0006.
    sections: Mapped[list[Any] | None] = mapped_column(JSONType)


class Artifact(Base):
    __tablename__ = "artifacts"
    # Covers an owner's storage usage (service/quota.py: the distinct blobs and their sizes) without the
    # table.
    __table_args__ = (Index("ix_artifacts_owner_blob", "owner", "sha256", "size"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    resource_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    filename: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyRecord(Base):
    """The first response to a POST carrying an Idempotency-Key, replayed for retries of that request."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    location: Mapped[str | None] = mapped_column(String(300))
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


RESOURCE_TABLES: dict[str, type[Dataset] | type[Model] | type[Audit]] = {
    "dataset": Dataset,
    "model": Model,
    "audit": Audit,
}
