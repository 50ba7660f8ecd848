"""Loading a job's inputs (datasets, trained models) back from the database and the artifact store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.models import Artifact, Dataset, Model
from service.views import ensemble_size_of
from worker.runner import JobContext, JobError

ARRAYS_FILE, DESCRIPTION_FILE = "arrays.npz", "dataset.json"


def _artifacts(ctx: JobContext, resource_id: str) -> dict[str, Artifact]:
    with ctx.db.read_session() as session:
        rows = session.scalars(
            select(Artifact).where(Artifact.resource_id == resource_id, Artifact.owner == ctx.owner)
        )
        return {row.kind: row for row in rows}


def _blob(ctx: JobContext, artifact: Artifact) -> Path:
    path = ctx.store.path_for(artifact.sha256)
    if not path.is_file():
        raise JobError(f"artifact {artifact.id} is missing from the artifact store")
    return path


def _ready_row(ctx: JobContext, table: Any, resource_id: str, kind: str) -> Any:
    with ctx.db.read_session() as session:
        row = session.scalar(select(table).where(table.id == resource_id, table.owner == ctx.owner))
    if row is None or row.status != "ready":
        raise JobError(f"{kind} {resource_id} is not available (deleted or not ready)")
    return row


def load_dataset(ctx: JobContext, dataset_id: str):
    """The engine Dataset of a ready dataset resource: its stored files linked into a scratch directory."""
    from sbengine.data import Dataset as EngineDataset

    _ready_row(ctx, Dataset, dataset_id, "dataset")
    artifacts = _artifacts(ctx, dataset_id)
    if "arrays" not in artifacts or "description" not in artifacts:
        raise JobError(f"dataset {dataset_id} has no stored arrays")
    directory = ctx.scratch / f"dataset-{dataset_id}"
    directory.mkdir(parents=True, exist_ok=True)
    for kind, name in (("arrays", ARRAYS_FILE), ("description", DESCRIPTION_FILE)):
        link = directory / name
        if not link.exists():
            os.symlink(_blob(ctx, artifacts[kind]), link)
    return EngineDataset.load(directory)


def weights_kind(member: int, size: int) -> str:
    """Artifact kind of a model's weights: ``weights``, or ``weights_<i>`` for member i of an ensemble."""
    return "weights" if size == 1 else f"weights_{member}"


def load_members(ctx: JobContext, model_id: str):
    """(modules, model row) of a ready model resource: one module, or one per member of an ensemble model;
    weights loaded from safetensors or an ONNX graph (data, not code)."""
    from sbengine.models.loading import load_network

    row = _ready_row(ctx, Model, model_id, "model")
    size = ensemble_size_of(row)
    artifacts = _artifacts(ctx, model_id)
    modules = []
    for member in range(size):
        kind = weights_kind(member, size)
        if kind not in artifacts:
            raise JobError(f"model {model_id} has no stored {kind}")
        # Any kind of model (registry, torchvision/timm, ONNX): the same module from inputs to logits; one
        # trained on normalized inputs normalizes inside the module.
        module = load_network(
            row.architecture,
            input_shape=tuple(row.input_shape),
            num_classes=row.num_classes,
            weights=_blob(ctx, artifacts[kind]),
            normalization=row.normalization,
        )
        modules.append(module)
    return modules, row


def load_model(ctx: JobContext, model_id: str):
    """(module, model row) of a ready single model (not an ensemble)."""
    modules, row = load_members(ctx, model_id)
    if len(modules) != 1:
        raise JobError(f"model {model_id} is an ensemble of {len(modules)}; load its members")
    return modules[0], row
