"""/v1/audits: run simplicity-bias checks on a trained model or an ensemble of models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from service import budget, limits
from service.auth import DB, CurrentPrincipal
from service.errors import field_error
from service.estimates import audit_estimate, model_cost
from service.ids import new_id
from service.inputs import Pending, dataset_description, lock_waited, usable
from service.jobstore import RESOURCE_STATUS, create_job
from service.models import Audit, Dataset, Job, Model
from service.routes.common import (
    INPUT_RESPONSES,
    PROBLEM_RESPONSES,
    Cursor,
    IdempotencyKey,
    Limit,
    get_owned,
    model_response,
    resource_page,
    settings_of,
)
from service.routes.resource_items import add_item_routes
from service.schemas.audits import (
    NEEDS_ENSEMBLE,
    NEEDS_FIXED_BLOCKS,
    NEEDS_GRADIENTS,
    OPTION_MODELS,
    AuditCreate,
    AuditPage,
    AuditRead,
    MlflowRequest,
)
from service.schemas.common import ResourceStatus
from service.settings import Settings
from service.submission import submit
from service.views import audit_read, audits_of_model, capabilities_of, ensemble_size_of

router = APIRouter(prefix="/v1/audits", tags=["audits"], responses=PROBLEM_RESPONSES)


def check_inputs(body: AuditCreate, model: Model, description: dict[str, Any]) -> None:
    """The dataset fits the model, and S and the splits exist in it (422 naming the field otherwise)."""
    shape, model_shape = list(description.get("input_shape") or []), list(model.input_shape or [])
    if shape != model_shape:
        raise field_error(
            "body.dataset_id",
            f"the dataset's inputs {tuple(shape)} do not match the model's {tuple(model_shape)}",
        )
    classes = description.get("num_classes")
    if None not in (classes, model.num_classes) and classes != model.num_classes:
        raise field_error(
            "body.dataset_id", f"the dataset has {classes} classes, the model {model.num_classes}"
        )
    n_blocks = len(description.get("blocks") or [])
    for i, block in enumerate(body.simple_blocks or []):
        if block >= n_blocks:
            raise field_error(
                f"body.simple_blocks.{i}", f"block {block} out of range (the dataset has {n_blocks})"
            )
    check_fixed_blocks(body, description)
    sizes = description.get("sizes") or {}
    if body.split not in sizes:
        raise field_error("body.split", f"the dataset has no {body.split!r} split")
    for check, options in body.requested_options().items():
        for option, message in options.dataset_problems(sizes=sizes, num_classes=classes):
            raise field_error(f"body.options.{check}.{option}", message)


def check_fixed_blocks(body: AuditCreate, description: dict[str, Any]) -> None:
    """422 for an attack (pgd, uap) whose S is a per-example region: those checks confine or measure a
    perturbation on S's fixed coordinates, which a mask block does not have (the job would fail later)."""
    needing = [check for check in body.checks if check in NEEDS_FIXED_BLOCKS]
    blocks = description.get("blocks") or []
    simple = body.simple_blocks if body.simple_blocks is not None else description.get("simple_blocks") or []
    regions = [
        blocks[b].get("name", str(b)) for b in simple if b < len(blocks) and blocks[b].get("kind") == "mask"
    ]
    if needing and regions:
        raise field_error(
            "body.checks",
            f"the {' and '.join(needing)} check{'s' if len(needing) > 1 else ''} need S as fixed "
            f"coordinates, but S here is a per-example region ({', '.join(regions)}); randomization, "
            "feature_dependence and generalization work on region blocks",
        )


def check_options(body: AuditCreate) -> None:
    """Options only for requested checks (a typo in ``checks`` must not silently drop them)."""
    for check in OPTION_MODELS:
        if getattr(body.options, check) is not None and check not in body.checks:
            raise field_error(
                f"body.options.{check}",
                f"options for a check that is not requested (add {check!r} to checks)",
            )


def mlflow_target(body: AuditCreate, settings: Settings, audit_id: str) -> dict[str, str] | None:
    """Where the audit's MLflow run goes (stored with the job for the worker), or None when this server
    logs no audits. Asking for MLflow on a server without a tracking server is a 422: silently dropping
    the request would leave a pipeline looking for a run that never comes."""
    if not settings.mlflow_tracking_uri:
        if body.mlflow is not None:
            raise field_error(
                "body.mlflow", "this server logs no audits to MLflow (SBAUDIT_MLFLOW_TRACKING_URI is not set)"
            )
        return None
    request = body.mlflow or MlflowRequest()
    return {
        "experiment": request.experiment or settings.mlflow_experiment,
        "run_name": request.run_name or body.name or audit_id,
    }


def _model(session: Session, owner: str, model_id: str, field: str, pending: list[Pending]) -> Model:
    """A model to audit; added to ``pending`` while it is not ready (still training)."""
    row: Model = get_owned(session, Model, "model", owner=owner, resource_id=model_id)
    if not usable(row, "model", field):
        pending.append((row, "model", field))
    return row


def audited_models(
    session: Session, body: AuditCreate, owner: str, pending: list[Pending]
) -> tuple[list[Model], int]:
    """The model rows to audit and the ensemble size: one row (its own ensemble_size), or the ``model_ids``
    rows, which must be single models agreeing on input shape and classes. Those not ready yet are added to
    ``pending``."""
    if body.model_id is not None:
        model = _model(session, owner, body.model_id, "body.model_id", pending)
        return [model], ensemble_size_of(model)
    rows: list[Model] = []
    for i, model_id in enumerate(body.model_ids or []):
        field = f"body.model_ids.{i}"
        row = _model(session, owner, model_id, field, pending)
        if ensemble_size_of(row) != 1:
            raise field_error(field, f"model {row.id} is itself an ensemble; list single models")
        first = rows[0] if rows else row
        if (
            list(row.input_shape or []) != list(first.input_shape or [])
            or row.num_classes != first.num_classes
        ):
            raise field_error(
                field,
                f"model {row.id} reads {tuple(row.input_shape or [])} with {row.num_classes} classes, "
                f"but {first.id} reads {tuple(first.input_shape or [])} with {first.num_classes}",
            )
        rows.append(row)
    return rows, len(rows)


def check_gradients(body: AuditCreate, models: list[Model]) -> None:
    """422 for a check that backpropagates (pgd, uap) on a model that runs forward only (an ONNX graph in
    onnxruntime), naming the check and the operators that kept the model out of torch."""
    needing = [check for check in body.checks if check in NEEDS_GRADIENTS]
    if not needing:
        return
    for model in models:
        capabilities = capabilities_of(model)
        if not capabilities.get("gradients", True):
            blocked = ", ".join(capabilities.get("blocked_by") or []) or capabilities.get("reason") or "?"
            raise field_error(
                "body.checks",
                f"the {' and '.join(needing)} check{'s' if len(needing) > 1 else ''} need"
                f"{'' if len(needing) > 1 else 's'} gradients, but model {model.id} runs in onnxruntime "
                f"(forward only) because of: {blocked}; randomization, feature_dependence and "
                "generalization work on it",
            )


@router.post(
    "",
    status_code=202,
    responses=INPUT_RESPONSES,
    response_model=AuditRead,
    summary="Audit a model or an ensemble",
    operation_id="createAudit",
)
async def create_audit(
    body: AuditCreate, request: Request, principal: CurrentPrincipal, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    settings = settings_of(request)
    limits.check_audit(body, settings)
    check_options(body)
    audit_id = new_id("audit")
    mlflow = mlflow_target(body, settings, audit_id)

    def build(session: Session) -> tuple[dict[str, Any], str, Job]:
        pending: list[Pending] = []
        models, ensemble_size = audited_models(session, body, principal.owner, pending)
        model = models[0]
        if ensemble_size == 1:
            needing = [check for check in body.checks if check in NEEDS_ENSEMBLE]
            if needing:
                raise field_error(
                    "body.checks",
                    f"the {needing[0]} check needs an ensemble: a model trained with ensemble_size > 1, "
                    "or model_ids",
                )
            if body.combine is not None:
                raise field_error("body.combine", "applies only to ensembles")
        check_gradients(body, models)
        dataset_id = body.dataset_id or model.dataset_id
        if not dataset_id:
            raise field_error("body.dataset_id", "this model was uploaded without a dataset: give dataset_id")
        dataset = get_owned(session, Dataset, "dataset", owner=principal.owner, resource_id=dataset_id)
        if not usable(dataset, "dataset", "body.dataset_id"):
            pending.append((dataset, "dataset", "body.dataset_id"))
        description = dataset_description(dataset)
        check_inputs(body, model, description)
        members = [model_cost(m) for m in models] if len(models) > 1 else [model_cost(model)] * ensemble_size
        estimate = budget.enforce(audit_estimate(body, members, description), settings)
        params: dict[str, Any] = {
            "checks": list(body.checks),
            "options": body.resolved_options(),
            "verdict_thresholds": body.verdict_thresholds.model_dump(mode="json"),
            "simple_blocks": body.simple_blocks,
            "split": body.split,
            "repeats": body.repeats,
            "seed": body.seed,
            "ensemble_size": ensemble_size,
        }
        if ensemble_size > 1:
            params["combine"] = body.combine or "logits"
        if body.model_ids is not None:
            params["model_ids"] = [m.id for m in models]
        if mlflow is not None:
            params["mlflow"] = mlflow
        row = Audit(
            id=audit_id,
            owner=principal.owner,
            name=body.name,
            model_id=model.id,
            dataset_id=dataset.id,
            params=params,
        )
        waiting_for = lock_waited(session, pending)
        job = create_job(
            session,
            owner=principal.owner,
            kind="run_audit",
            resource_type="audit",
            resource_id=row.id,
            params={"model_id": model.id, "dataset_id": dataset.id, **params},
            max_attempts=settings.job_max_attempts,
            estimate=estimate,
            waiting_for=waiting_for,
        )
        row.job_id, row.status = job.id, RESOURCE_STATUS[job.state]
        session.add(row)
        return audit_read(row, []).model_dump(mode="json"), f"/v1/audits/{row.id}", job

    return await submit(request, principal=principal, idempotency_key=idempotency_key, body=body, build=build)


@router.get("", response_model=AuditPage, summary="List audits, newest first", operation_id="listAudits")
async def list_audits(
    request: Request,
    principal: CurrentPrincipal,
    db: DB,
    limit: Limit = None,
    cursor: Cursor = None,
    status: ResourceStatus | None = None,
    model_id: str | None = None,
) -> Response:
    filters = []
    if status:
        filters.append(Audit.status == status)
    if model_id:
        filters.append(audits_of_model(model_id))
    page = await resource_page(
        request, db, Audit, audit_read, owner=principal.owner, limit=limit, cursor=cursor, filters=filters
    )
    return model_response(AuditPage(**page))


add_item_routes(router, table=Audit, kind="audit", read_model=AuditRead, read=audit_read)
