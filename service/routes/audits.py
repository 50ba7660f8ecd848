"""/v1/audits: run simplicity-bias checks on a trained model."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import limits
from service.auth import DB, CurrentPrincipal
from service.errors import field_error
from service.ids import new_id
from service.jobstore import QUEUED, create_job
from service.models import Audit, Dataset, Model
from service.routes.common import (
    PROBLEM_RESPONSES,
    Cursor,
    IdempotencyKey,
    Limit,
    get_owned,
    model_response,
    require_ready,
    resource_page,
    settings_of,
)
from service.routes.resource_items import add_item_routes
from service.schemas.audits import AuditCreate, AuditRead
from service.schemas.common import Page, ResourceStatus
from service.submission import submit
from service.views import audit_read

router = APIRouter(prefix="/v1/audits", tags=["audits"], responses=PROBLEM_RESPONSES)


def check_inputs(body: AuditCreate, model: Model, description: dict) -> None:
    """The dataset fits the model, and S and the split exist in it (422 naming the field otherwise)."""
    shape, model_shape = list(description.get("input_shape") or []), list(model.input_shape or [])
    if shape != model_shape:
        raise field_error(
            "body.dataset_id",
            f"the dataset's inputs {tuple(shape)} do not match the model's {tuple(model_shape)}",
        )
    n_blocks = len(description.get("blocks") or [])
    for i, block in enumerate(body.simple_blocks or []):
        if block >= n_blocks:
            raise field_error(
                f"body.simple_blocks.{i}", f"block {block} out of range (the dataset has {n_blocks})"
            )
    if body.split not in (description.get("sizes") or {}):
        raise field_error("body.split", f"the dataset has no {body.split!r} split")


@router.post("", status_code=202, response_model=AuditRead, summary="Audit a model")
def create_audit(
    body: AuditCreate, request: Request, principal: CurrentPrincipal, idempotency_key: IdempotencyKey = None
):
    settings = settings_of(request)
    limits.check_audit(body, settings)

    def build(session):
        model = get_owned(session, Model, "model", owner=principal.owner, resource_id=body.model_id)
        require_ready(model, "model", "body.model_id")
        dataset_id = body.dataset_id or model.dataset_id
        dataset = get_owned(session, Dataset, "dataset", owner=principal.owner, resource_id=dataset_id)
        require_ready(dataset, "dataset", "body.dataset_id")
        check_inputs(body, model, dataset.description or {})
        params = {
            "checks": list(body.checks),
            "simple_blocks": body.simple_blocks,
            "split": body.split,
            "repeats": body.repeats,
            "seed": body.seed,
        }
        row = Audit(
            id=new_id("audit"),
            owner=principal.owner,
            name=body.name,
            status=QUEUED,
            model_id=model.id,
            dataset_id=dataset.id,
            params=params,
        )
        job = create_job(
            session,
            owner=principal.owner,
            kind="run_audit",
            resource_type="audit",
            resource_id=row.id,
            params={"model_id": model.id, "dataset_id": dataset.id, **params},
            max_attempts=settings.job_max_attempts,
        )
        row.job_id = job.id
        session.add(row)
        session.flush()
        return audit_read(row, []).model_dump(mode="json"), f"/v1/audits/{row.id}", job.id

    return submit(request, principal=principal, idempotency_key=idempotency_key, body=body, build=build)


@router.get("", response_model=Page[AuditRead], summary="List audits, newest first")
def list_audits(
    request: Request,
    principal: CurrentPrincipal,
    db: DB,
    limit: Limit = None,
    cursor: Cursor = None,
    status: ResourceStatus | None = None,
    model_id: str | None = None,
):
    filters = []
    if status:
        filters.append(Audit.status == status)
    if model_id:
        filters.append(Audit.model_id == model_id)
    page = resource_page(
        request, db, Audit, audit_read, owner=principal.owner, limit=limit, cursor=cursor, filters=filters
    )
    return model_response(Page[AuditRead](**page))


add_item_routes(router, table=Audit, kind="audit", read_model=AuditRead, read=audit_read)
