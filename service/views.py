"""ORM rows -> response schemas. One place that knows how stored JSON maps onto the public fields."""

from __future__ import annotations

import typing
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, or_, select
from sqlalchemy.orm import Session

from service.models import Artifact, Audit, Dataset, Job, Model
from service.schemas.audits import AuditRead, VerdictCode
from service.schemas.common import ArtifactRead
from service.schemas.datasets import DatasetRead
from service.schemas.jobs import JobRead
from service.schemas.models import ModelRead


def artifact_read(row: Artifact) -> ArtifactRead:
    return ArtifactRead(
        id=row.id,
        kind=row.kind,
        content_type=row.content_type,
        size=row.size,
        sha256=row.sha256,
        filename=row.filename,
        url=f"/v1/artifacts/{row.id}",
        created_at=row.created_at,
    )


def artifacts_by_resource(session: Session, resource_ids: Iterable[str]) -> dict[str, list[ArtifactRead]]:
    ids = list(resource_ids)
    out: dict[str, list[ArtifactRead]] = defaultdict(list)
    if ids:
        query = (
            select(Artifact).where(Artifact.resource_id.in_(ids)).order_by(Artifact.created_at, Artifact.id)
        )
        for row in session.scalars(query):
            out[row.resource_id].append(artifact_read(row))
    return out


def _common(row: Dataset | Model | Audit, artifacts: list[ArtifactRead]) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "job_id": row.job_id,
        "error": row.error,
        "artifacts": artifacts,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def dataset_read(row: Dataset, artifacts: list[ArtifactRead]) -> DatasetRead:
    desc = row.description or {}
    fields = (
        "input_shape",
        "num_classes",
        "blocks",
        "simple_blocks",
        "bayes_accuracy",
        "sizes",
        "rotated",
        "seed",
        "classes",
        "feature_names",
    )
    described: dict[str, Any] = {k: desc.get(k) for k in fields}
    return DatasetRead(**_common(row, artifacts), spec=row.spec, **described)


# A model's ensemble_size is kept in its ``training`` JSON (how it was trained), under this key, and shown
# as a field of its own: the public ``training`` object stays exactly the TrainingConfig that was sent.
ENSEMBLE_SIZE_KEY = "ensemble_size"


def stored_training(training: dict[str, Any], ensemble_size: int) -> dict[str, Any]:
    return {**training, ENSEMBLE_SIZE_KEY: ensemble_size} if ensemble_size != 1 else dict(training)


def ensemble_size_of(row: Model) -> int:
    return int((row.training or {}).get(ENSEMBLE_SIZE_KEY, 1))


def model_read(row: Model, artifacts: list[ArtifactRead]) -> ModelRead:
    result = dict(row.result or {})
    metrics = result.pop("metrics", None)
    return ModelRead(
        **_common(row, artifacts),
        dataset_id=row.dataset_id,
        architecture=row.architecture,
        training={k: v for k, v in (row.training or {}).items() if k != ENSEMBLE_SIZE_KEY},
        ensemble_size=ensemble_size_of(row),
        seed=row.seed,
        input_shape=row.input_shape,
        num_classes=row.num_classes,
        metrics=metrics,
        result=result or None,
        capabilities=capabilities_of(row),
    )


def capabilities_of(row: Model) -> dict[str, Any]:
    """An uploaded ONNX graph's recorded capabilities; every other model is a differentiable torch module."""
    stored = (row.result or {}).get("capabilities")
    if isinstance(stored, dict):
        return stored
    return {"gradients": True, "runtime": "torch", "blocked_by": [], "reason": None}


def audits_of_model(model_id: str) -> ColumnElement[bool]:
    """Audits of ``model_id``: on it alone, or on an ensemble of ``model_ids`` that includes it (those ids
    live in the audit's ``params`` JSON; its text holds each one as a quoted string)."""
    return or_(
        Audit.model_id == model_id, cast(Audit.params, Text).contains(f'"{model_id}"', autoescape=True)
    )


def audit_read(row: Audit, artifacts: list[ArtifactRead]) -> AuditRead:
    params = row.params
    return AuditRead(
        **_common(row, artifacts),
        model_id=row.model_id,
        model_ids=params.get("model_ids"),
        ensemble_size=params.get("ensemble_size", 1),
        combine=params.get("combine"),
        dataset_id=row.dataset_id,
        checks=params.get("checks", []),
        options=params.get("options") or {},
        simple_blocks=params.get("simple_blocks"),
        split=params.get("split", "test"),
        repeats=params.get("repeats", 1),
        seed=params.get("seed", 0),
        verdict_thresholds=params.get("verdict_thresholds"),
        verdict=row.verdict,
        # Only the worker writes it, from the engine's categories; AuditRead validates it all the same.
        verdict_code=typing.cast(VerdictCode | None, row.verdict_code),
        results=row.results,
        sections=row.sections,
        environment=params.get("environment"),
        mlflow=params.get("mlflow"),
    )


def job_read(row: Job) -> JobRead:
    return JobRead.model_validate(row)
