"""POST /v1/models/uploads and POST /v1/datasets/uploads: a user's own checkpoint or evaluation data.

Synchronous: the request streams the file to disk (service/uploads/stream.py), runs the validator process
on it (service/uploads/validator.py: it checks the framing, then the contents; this process parses nothing
of the file) and answers ``201`` with a *ready* model or dataset, or a
4xx problem with nothing left behind. Validation takes seconds (the validator imports torch), well within a
request. The resource then behaves like any other: it is produced by a job (kind ``upload_model`` /
``upload_dataset``, already ``succeeded``), its files are artifacts, audits and deletion work unchanged.

A model upload of the same bytes, by the same owner, with the same declaration (architecture, input
shape, classes, normalization, dataset) answers ``200`` with the model created the first time.

It is over 400 lines because both upload routes share one receive-validate-store path (and its clean-up
and refusals) and each adds only its declaration checks and its record; splitting the two would split
that path.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import limits, quota
from service.auth import CurrentPrincipal, Principal
from service.db import Database
from service.errors import field_error
from service.ids import new_id
from service.jobstore import SUCCEEDED, create_job
from service.models import Artifact, Dataset, Job, Model, utcnow
from service.routes.common import PROBLEM_RESPONSES, get_owned, problem, require_ready, settings_of
from service.schemas.datasets import DatasetRead
from service.schemas.models import LIBRARIES, VISION_ARCHITECTURES, Architecture, ModelRead
from service.schemas.uploads import (
    DATASET_FIELDS,
    MODEL_FIELDS,
    DatasetUpload,
    FormError,
    ModelUpload,
    decode_form,
)
from service.settings import Settings
from service.storage import ArtifactStore, StoredBlob
from service.uploads.rejected import Rejected
from service.uploads.stream import FILE_NAME, ReceivedUpload, as_problem, receive_upload
from service.uploads.validator import validated
from service.views import artifacts_by_resource, dataset_read, model_read

router = APIRouter(responses=PROBLEM_RESPONSES)

Schema = TypeVar("Schema", bound=BaseModel)
# store(request, owner, settings, upload): validate and record a received upload, answer its response.
UploadStore = Callable[[Request, str, Settings, ReceivedUpload], Awaitable[JSONResponse]]

MODEL_UPLOAD_PATH = "/v1/models/uploads"
DATASET_UPLOAD_PATH = "/v1/datasets/uploads"
UPLOAD_PATHS = (MODEL_UPLOAD_PATH, DATASET_UPLOAD_PATH)
# What the validator writes into its working directory (service/uploads/sandbox.py).
WEIGHTS_NAME = "weights.safetensors"
ONNX_NAME = "model.onnx"
ONNX = "onnx"
# What the record of an uploaded ONNX graph keeps from the validator's answer (service/uploads/... docs).
ONNX_RESULT_KEYS = ("capabilities", "nodes", "operators", "onnxruntime", "input_dtype")
DATASET_NAME = "dataset"

_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: problem("The multipart body is malformed or truncated (problem+json)."),
    413: problem("The file exceeds SBAUDIT_MAX_UPLOAD_BYTES (problem+json)."),
    415: problem("The body is not multipart/form-data (problem+json)."),
    507: problem("Your storage quota (SBAUDIT_OWNER_QUOTA_BYTES) is used up, or this file would exceed it."),
    503: problem(
        "All validator slots are busy; retry after Retry-After seconds (problem+json).",
        {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
}
_MODEL_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_UPLOAD_RESPONSES,
    200: {
        "model": ModelRead,
        "description": "The same file was already uploaded with the same declaration: that model.",
    },
}


def _form_schema(required: list[str], properties: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": required, "properties": properties}
                }
            },
        }
    }


_MODEL_FORM = _form_schema(
    ["file"],
    {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "safetensors, or a state_dict saved with torch.save (zip format; loaded with "
            "weights_only=True), with an architecture; or an ONNX graph (.onnx, weights inside) without one. "
            "Never pickled modules, TorchScript or code.",
        },
        "architecture": {
            "type": "string",
            "description": 'JSON, as in POST /v1/models, e.g. {"name": "fcn", "width": 100, "depth": 2}, or '
            '{"name": "torchvision", "model": "resnet18"} / {"name": "timm", "model": ...}; '
            "omitted for an ONNX graph",
        },
        "input_shape": {
            "type": "string",
            "description": "JSON list [3, 32, 32] or 3,32,32 (default: the dataset's)",
        },
        "num_classes": {"type": "string", "description": "integer (default: the dataset's)"},
        "normalization": {
            "type": "string",
            "description": 'JSON {"mean": [...], "std": [...]}: one value, or one per channel/feature',
        },
        "dataset_id": {"type": "string", "description": "the dataset audits use by default"},
        "name": {"type": "string"},
    },
)
_DATASET_FORM = _form_schema(
    ["file", "blocks"],
    {
        "file": {
            "type": "string",
            "format": "binary",
            "description": ".npz or safetensors: x and y (+ split: 0/1/2), or x_train/y_train, x_val/y_val, "
            "x_test/y_test; a table (CSV, Parquet) with a label column; or images in a zip or tar archive "
            "([train|val|test/]<class>/<name>.png|jpg|jpeg|webp, masks at masks/<same path>.png)",
        },
        "blocks": {
            "type": "string",
            "description": 'JSON list: {"name", "indices": [...]}, {"name", "channels"/"rows"/"cols": '
            '[start, stop]}, {"name", "columns": [...]} (tables) or {"name", "mask": "region"|"complement"}',
        },
        "label": {"type": "string", "description": "a table's label column"},
        "split_column": {"type": "string", "description": "a table's split column (train/val/test or 0/1/2)"},
        "categorical": {"type": "string", "description": "JSON list of a table's columns to one-hot encode"},
        "image_size": {"type": "string", "description": "H,W or [H, W] images are resized to"},
        "simple_blocks": {
            "type": "string",
            "description": "JSON list of block indices forming S (default [0])",
        },
        "num_classes": {"type": "string", "description": "integer (default: largest label + 1)"},
        "name": {"type": "string"},
    },
)


def _validated(schema: type[Schema], fields: dict[str, str]) -> Schema:
    try:
        data = decode_form(fields)
    except FormError as exc:
        raise field_error(f"body.{exc.field}", exc.message) from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors, body=data) from None


def _check_architecture_limits(architecture: Architecture, settings: Settings) -> None:
    for option, limit, name in (
        ("width", settings.max_width, "SBAUDIT_MAX_WIDTH"),
        ("filters", settings.max_width, "SBAUDIT_MAX_WIDTH"),
        ("hidden", settings.max_width, "SBAUDIT_MAX_WIDTH"),
        ("depth", settings.max_depth, "SBAUDIT_MAX_DEPTH"),
        ("layers", settings.max_depth, "SBAUDIT_MAX_DEPTH"),
    ):
        value = getattr(architecture, option, None)
        if value is not None and value > limit:
            raise field_error(
                f"body.architecture.{option}", f"{value} exceeds this server's limit of {limit} ({name})"
            )


def _check_fits(architecture: Architecture, input_shape: list[int]) -> None:
    """The architecture can read inputs of this shape (the validator re-checks; this answers 422 early)."""
    name = architecture.name
    if name in VISION_ARCHITECTURES and (
        len(input_shape) != 3 or input_shape[0] != 3 or any(n % 32 for n in input_shape[1:])
    ):
        raise field_error(
            "body.input_shape",
            f"{name} needs (3, H, W) images with H and W multiples of 32, not {tuple(input_shape)}",
        )
    if name in LIBRARIES and len(input_shape) != 3:
        raise field_error(
            "body.input_shape", f"{name} networks take (C, H, W) images, not {tuple(input_shape)}"
        )
    if name in ("cnn1d", "gru", "lstm") and len(input_shape) != 1:
        raise field_error("body.input_shape", f"{name} needs 1-D inputs, not {tuple(input_shape)}")
    if architecture.name in ("gru", "lstm") and math.prod(input_shape) % architecture.step_features:
        raise field_error(
            "body.architecture.step_features",
            f"must divide the number of input features ({math.prod(input_shape)})",
        )


async def _room(request: Request, owner: str, settings: Settings) -> quota.Room | None:
    """The owner's room under the storage quota; 507 before reading the body when there is none."""
    return await anyio.to_thread.run_sync(
        quota.room_for, request.app.state.db, owner, settings.owner_quota_bytes
    )


def _check_room(upload: ReceivedUpload, stored: list[Path]) -> None:
    """What will be stored (the validator's output, up to 4x the upload) must fit the quota too."""
    if upload.room is not None:
        upload.room.check(sum(path.stat().st_size for path in stored))


def _created(read: BaseModel, location: str, status_code: int) -> JSONResponse:
    return JSONResponse(read.model_dump(mode="json"), status_code=status_code, headers={"Location": location})


def _succeeded_job(
    session: Session, *, owner: str, kind: str, resource_type: str, resource_id: str, params: dict[str, Any]
) -> Job:
    """The job record of an upload: validated within the request, so it is born succeeded."""
    now = utcnow()
    job = create_job(
        session,
        owner=owner,
        kind=kind,
        resource_type=resource_type,
        resource_id=resource_id,
        params=params,
        max_attempts=1,
    )
    job.state, job.progress, job.worker_id = SUCCEEDED, 1.0, "api"
    job.started_at = job.finished_at = job.updated_at = now
    return job


def _artifact(
    owner: str, resource_id: str, kind: str, blob: StoredBlob, content_type: str, filename: str
) -> Artifact:
    return Artifact(
        id=new_id("artifact"),
        owner=owner,
        resource_id=resource_id,
        kind=kind,
        sha256=blob.sha256,
        size=blob.size,
        content_type=content_type,
        filename=filename,
    )


# --- models --------------------------------------------------------------------------------------------


def _model_defaults(db: Database, owner: str, body: ModelUpload) -> tuple[list[int] | None, int | None]:
    """input_shape and num_classes: as declared, else the dataset's; they must agree with the dataset. An
    ONNX graph (no architecture) may leave both open: its own signature supplies them."""
    shape, classes = body.input_shape, body.num_classes
    if body.dataset_id is not None:
        with db.read_session() as session:
            dataset = get_owned(session, Dataset, "dataset", owner=owner, resource_id=body.dataset_id)
            require_ready(dataset, "dataset", "body.dataset_id")
            description = dataset.description or {}
        ds_shape, ds_classes = list(description.get("input_shape") or []), description.get("num_classes")
        if shape is not None and list(shape) != ds_shape:
            raise field_error(
                "body.input_shape", f"{tuple(shape)} differs from the dataset's {tuple(ds_shape)}"
            )
        if classes is not None and classes != ds_classes:
            raise field_error("body.num_classes", f"{classes} differs from the dataset's {ds_classes}")
        shape, classes = shape or ds_shape, classes or ds_classes
    onnx = body.architecture is None
    if not shape and not onnx:
        raise field_error("body.input_shape", "required (or give a dataset_id to take it from)")
    if not classes and not onnx:
        raise field_error("body.num_classes", "required (or give a dataset_id to take it from)")
    if shape and body.normalization and len(body.normalization.mean) not in (1, shape[0]):
        raise field_error("body.normalization", f"needs 1 or {shape[0]} values (one per channel or feature)")
    return (list(shape) if shape else None), (int(classes) if classes else None)


def _same_model(row: Model, declared: dict[str, Any]) -> bool:
    if declared["architecture"] is None:  # an ONNX graph: what it declares about itself may be left open
        architecture_matches = (row.architecture or {}).get("name") == ONNX
    else:
        architecture_matches = row.architecture == declared["architecture"]
    same: bool = (
        architecture_matches
        and declared["input_shape"] in (None, list(row.input_shape or []))
        and declared["num_classes"] in (None, row.num_classes)
        and (row.normalization or None) == declared["normalization"]
        and row.dataset_id == declared["dataset_id"]
    )
    return same


def _existing_model(db: Database, owner: str, sha256: str, declared: dict[str, Any]) -> ModelRead | None:
    with db.read_session() as session:
        rows = session.scalars(
            select(Model).where(
                Model.owner == owner,
                Model.sha256 == sha256,
                Model.source == "upload",
                Model.status == "ready",
            )
        )
        for row in rows:
            if _same_model(row, declared):
                return model_read(row, artifacts_by_resource(session, [row.id])[row.id])
    return None


def _record_model(
    db: Database,
    store: ArtifactStore,
    *,
    owner: str,
    name: str | None,
    upload: ReceivedUpload,
    fmt: str,
    declared: dict[str, Any],
    answer: dict[str, Any],
    weights: Path,
) -> ModelRead:
    blob = store.put_file(weights, move=True)
    with db.write_session() as session:
        model_id = new_id("model")
        upload_info = {
            "sha256": upload.sha256,
            "size": upload.size,
            "format": fmt,
            "filename": upload.filename,
        }
        job = _succeeded_job(
            session, owner=owner, kind="upload_model", resource_type="model", resource_id=model_id,
            params={**upload_info, **declared},
        )  # fmt: skip
        row = Model(
            id=model_id,
            owner=owner,
            name=name,
            status="ready",
            job_id=job.id,
            dataset_id=declared["dataset_id"],
            architecture=answer["architecture"],
            training={},
            seed=0,
            input_shape=answer.get("input_shape", declared["input_shape"]),
            num_classes=answer.get("num_classes", declared["num_classes"]),
            result={
                "source": "upload",
                **upload_info,
                "normalization": declared["normalization"],
                "tensors": answer["tensors"],
                "parameters": answer["parameters"],
                # measured by the validator: budgets of models service/model_cost.py has no formula for
                "cost": answer.get("cost"),
                **{key: answer[key] for key in ONNX_RESULT_KEYS if key in answer},
            },
            source="upload",
            sha256=upload.sha256,
            normalization=declared["normalization"],
        )
        suffix = "onnx" if fmt == ONNX else "safetensors"
        artifact = _artifact(
            owner, model_id, "weights", blob, "application/octet-stream", f"{model_id}.{suffix}"
        )
        session.add_all([row, artifact])
        session.flush()
        return model_read(row, artifacts_by_resource(session, [model_id])[model_id])


async def _receive_and_store(
    request: Request, principal: Principal, text_fields: tuple[str, ...], store: UploadStore
) -> JSONResponse:
    """Receive a multipart upload (refused up front when the owner has no room left), hand it to ``store``
    and always remove what was received, whether it was stored or refused."""
    settings = settings_of(request)
    room = await _room(request, principal.owner, settings)
    upload = await receive_upload(
        request, settings=settings, file_field="file", text_fields=text_fields, room=room
    )
    try:
        return await store(request, principal.owner, settings, upload)
    except Rejected as exc:
        raise as_problem(exc) from None
    finally:
        with anyio.CancelScope(shield=True):  # also when the request is cancelled (server shutdown)
            await anyio.to_thread.run_sync(upload.cleanup)


@router.post(
    MODEL_UPLOAD_PATH,
    status_code=201,
    response_model=ModelRead,
    tags=["models"],
    summary="Upload a checkpoint (multipart)",
    operation_id="uploadModel",
    responses=_MODEL_UPLOAD_RESPONSES,
    openapi_extra=_MODEL_FORM,
)
async def upload_model(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    return await _receive_and_store(request, principal, MODEL_FIELDS, _upload_model)


async def _upload_model(
    request: Request, owner: str, settings: Settings, upload: ReceivedUpload
) -> JSONResponse:
    db: Database = request.app.state.db
    body: ModelUpload = _validated(ModelUpload, upload.fields)
    if body.architecture is not None:
        _check_architecture_limits(body.architecture, settings)
    shape, classes = await anyio.to_thread.run_sync(_model_defaults, db, owner, body)
    limits.check_model_upload(body, shape, classes, settings)
    if body.architecture is not None and shape is not None:
        _check_fits(body.architecture, shape)
    declared = {
        "architecture": body.architecture.model_dump(mode="json") if body.architecture else None,
        "input_shape": shape,
        "num_classes": classes,
        "normalization": body.normalization.model_dump(mode="json") if body.normalization else None,
        "dataset_id": body.dataset_id or "",
    }
    existing = await anyio.to_thread.run_sync(_existing_model, db, owner, upload.sha256, declared)
    if existing is not None:
        return _created(existing, f"/v1/models/{existing.id}", 200)
    onnx = body.architecture is None
    validation = validated(
        {
            "kind": "onnx" if onnx else "checkpoint",
            "max_bytes": settings.max_upload_bytes,
            "max_input_size": settings.max_input_size,
            "max_classes": settings.max_classes,
            "output": ONNX_NAME if onnx else WEIGHTS_NAME,
            **{k: declared[k] for k in ("architecture", "input_shape", "num_classes", "normalization")},
        },
        upload=upload.directory / FILE_NAME,
        program=request.app.state.upload_validator,
        settings=settings,
    )
    async with validation as (answer, outputs):
        weights = outputs / (ONNX_NAME if onnx else WEIGHTS_NAME)
        _check_room(upload, [weights])
        read = await anyio.to_thread.run_sync(
            lambda: _record_model(
                db, request.app.state.store, owner=owner, name=body.name, upload=upload,
                fmt=answer["format"], declared=declared, answer=answer, weights=weights,
            )
        )  # fmt: skip
    return _created(read, f"/v1/models/{read.id}", 201)


# --- datasets ------------------------------------------------------------------------------------------


def _bayes_unknown(n_blocks: int) -> dict[str, Any]:
    return {"blocks": [None] * n_blocks, "simple": None, "complex": None, "all": None}


def _record_dataset(
    db: Database,
    store: ArtifactStore,
    *,
    owner: str,
    body: DatasetUpload,
    upload: ReceivedUpload,
    fmt: str,
    description: dict[str, Any],
    out: Path,
) -> DatasetRead:
    arrays = store.put_file(out / "arrays.npz", move=True)
    described = store.put_file(out / "dataset.json", move=True)
    with db.write_session() as session:
        dataset_id = new_id("dataset")
        upload_info = {
            "sha256": upload.sha256,
            "size": upload.size,
            "format": fmt,
            "filename": upload.filename,
        }
        spec = {"upload": upload_info, **body.model_dump(mode="json", exclude_none=True)}
        job = _succeeded_job(
            session, owner=owner, kind="upload_dataset", resource_type="dataset", resource_id=dataset_id,
            params=spec,
        )  # fmt: skip
        row = Dataset(
            id=dataset_id,
            owner=owner,
            name=body.name,
            status="ready",
            job_id=job.id,
            spec=spec,
            description={**description, "bayes_accuracy": _bayes_unknown(len(description["blocks"]))},
        )
        session.add_all(
            [
                row,
                _artifact(
                    owner,
                    dataset_id,
                    "arrays",
                    arrays,
                    "application/octet-stream",
                    f"{dataset_id}-arrays.npz",
                ),
                _artifact(
                    owner, dataset_id, "description", described, "application/json", f"{dataset_id}.json"
                ),
            ]
        )
        session.flush()
        return dataset_read(row, artifacts_by_resource(session, [dataset_id])[dataset_id])


@router.post(
    DATASET_UPLOAD_PATH,
    status_code=201,
    response_model=DatasetRead,
    tags=["datasets"],
    summary="Upload evaluation data with declared feature blocks (multipart)",
    operation_id="uploadDataset",
    responses=_UPLOAD_RESPONSES,
    openapi_extra=_DATASET_FORM,
)
async def upload_dataset(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    return await _receive_and_store(request, principal, DATASET_FIELDS, _upload_dataset)


async def _upload_dataset(
    request: Request, owner: str, settings: Settings, upload: ReceivedUpload
) -> JSONResponse:
    body: DatasetUpload = _validated(DatasetUpload, upload.fields)
    limits.check_dataset_upload(body, settings)
    validation = validated(
        {
            "kind": "dataset",
            "max_bytes": settings.max_upload_bytes,
            "max_samples": settings.max_samples,
            "blocks": [b.model_dump(mode="json", exclude_none=True) for b in body.blocks],
            "simple_blocks": body.simple_blocks,
            "num_classes": body.num_classes,
            "name": body.name,
            "sha256": upload.sha256,
            "output": DATASET_NAME,
            "label": body.label,
            "split_column": body.split_column,
            "categorical": body.categorical,
            "image_size": body.image_size,
            "max_input_size": settings.max_input_size,
        },
        upload=upload.directory / FILE_NAME,
        program=request.app.state.upload_validator,
        settings=settings,
    )
    async with validation as (answer, outputs):
        out = outputs / DATASET_NAME
        _check_room(upload, [out / "arrays.npz", out / "dataset.json"])
        read = await anyio.to_thread.run_sync(
            lambda: _record_dataset(
                request.app.state.db, request.app.state.store, owner=owner, body=body, upload=upload,
                fmt=answer["format"], description=answer["description"], out=out,
            )
        )  # fmt: skip
    return _created(read, f"/v1/datasets/{read.id}", 201)
