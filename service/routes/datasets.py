"""/v1/datasets: generate a dataset from a preset or a block composition."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from service import budget, limits, raw_data
from service.auth import DB, CurrentPrincipal
from service.estimates import dataset_estimate
from service.ids import new_id
from service.jobstore import RESOURCE_STATUS, create_job
from service.models import Dataset, Job
from service.routes.common import (
    CREATE_RESPONSES,
    PROBLEM_RESPONSES,
    Cursor,
    IdempotencyKey,
    Limit,
    model_response,
    resource_page,
    settings_of,
)
from service.routes.resource_items import add_item_routes
from service.schemas.common import ResourceStatus
from service.schemas.datasets import IMAGE_PRESETS, DatasetCreate, DatasetPage, DatasetRead
from service.submission import submit
from service.views import dataset_read

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=PROBLEM_RESPONSES)


@router.post(
    "",
    status_code=202,
    responses=CREATE_RESPONSES,
    response_model=DatasetRead,
    summary="Generate a dataset",
    operation_id="createDataset",
)
async def create_dataset(
    body: DatasetCreate, request: Request, principal: CurrentPrincipal, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    settings = settings_of(request)
    limits.check_dataset(body, settings)
    if body.preset in IMAGE_PRESETS:
        raw_data.check_image_preset(body.preset, settings)
    estimate = budget.enforce(dataset_estimate(body), settings)

    def build(session: Session) -> tuple[dict[str, Any], str, Job]:
        row = Dataset(
            id=new_id("dataset"),
            owner=principal.owner,
            name=body.name,
            spec=body.model_dump(mode="json", exclude_none=True),
        )
        job = create_job(
            session,
            owner=principal.owner,
            kind="generate_dataset",
            resource_type="dataset",
            resource_id=row.id,
            params={"request": body.engine_request()},
            max_attempts=settings.job_max_attempts,
            estimate=estimate,
        )
        row.job_id, row.status = job.id, RESOURCE_STATUS[job.state]
        session.add(row)
        return dataset_read(row, []).model_dump(mode="json"), f"/v1/datasets/{row.id}", job

    return await submit(request, principal=principal, idempotency_key=idempotency_key, body=body, build=build)


@router.get(
    "", response_model=DatasetPage, summary="List datasets, newest first", operation_id="listDatasets"
)
async def list_datasets(
    request: Request,
    principal: CurrentPrincipal,
    db: DB,
    limit: Limit = None,
    cursor: Cursor = None,
    status: ResourceStatus | None = None,
) -> Response:
    filters = [Dataset.status == status] if status else []
    page = await resource_page(
        request, db, Dataset, dataset_read, owner=principal.owner, limit=limit, cursor=cursor, filters=filters
    )
    return model_response(DatasetPage(**page))


add_item_routes(router, table=Dataset, kind="dataset", read_model=DatasetRead, read=dataset_read)
