"""/v1/models: train an architecture on a dataset."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from service import budget, limits
from service.auth import DB, CurrentPrincipal
from service.errors import field_error
from service.estimates import training_estimate
from service.ids import new_id
from service.inputs import Pending, dataset_description, lock_waited, usable
from service.jobstore import RESOURCE_STATUS, create_job
from service.measured_cost import measured_cost
from service.model_cost import NetworkCost
from service.models import Dataset, Job, Model
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
from service.schemas.audits import BINARY_LOSSES
from service.schemas.common import ResourceStatus
from service.schemas.models import (
    LIBRARIES,
    VISION_ARCHITECTURES,
    LibraryArchitecture,
    ModelCreate,
    ModelPage,
    ModelRead,
)
from service.settings import Settings
from service.submission import submit
from service.views import model_read, stored_training

router = APIRouter(prefix="/v1/models", tags=["models"], responses=PROBLEM_RESPONSES)


def check_fits(body: ModelCreate, input_shape: list[int]) -> None:
    """The architecture can read the dataset's inputs (the engine re-checks; this answers 422 early)."""
    arch = body.architecture
    if arch.name in VISION_ARCHITECTURES:
        if len(input_shape) != 3 or input_shape[0] != 3 or any(n % 32 for n in input_shape[1:]):
            raise field_error(
                "body.architecture.name",
                f"{arch.name} needs (3, H, W) images with H and W multiples of 32; the dataset's inputs are "
                f"{tuple(input_shape)}",
            )
    elif arch.name in LIBRARIES and len(input_shape) != 3:
        raise field_error(
            "body.architecture.name",
            f"{arch.name} networks take (C, H, W) images; the dataset's inputs are {tuple(input_shape)}",
        )
    elif arch.name in ("cnn1d", "gru", "lstm") and len(input_shape) != 1:
        raise field_error(
            "body.architecture.name", f"{arch.name} needs 1-D inputs; the dataset's are {tuple(input_shape)}"
        )
    if arch.name in ("gru", "lstm") and math.prod(input_shape) % arch.step_features:
        raise field_error(
            "body.architecture.step_features",
            f"must divide the number of input features ({math.prod(input_shape)})",
        )


def check_adversarial(body: ModelCreate, num_classes: int | None) -> None:
    """The binary PGD losses need a two-class dataset."""
    adversarial = body.training.adversarial
    if adversarial is None or num_classes in (None, 2):
        return
    for name in ("attack", "eval_attack"):
        attack = getattr(adversarial, name)
        if attack is not None and attack.loss in BINARY_LOSSES:
            raise field_error(
                f"body.training.adversarial.{name}.loss",
                f"{attack.loss!r} needs a two-class dataset; this one has {num_classes} classes",
            )


async def _library_cost(
    request: Request, owner: str, body: ModelCreate, settings: Settings
) -> NetworkCost | None:
    """A torchvision or timm network, measured by the engine at the dataset's input shape and number of
    classes (service/measured_cost.py) before the job is budgeted; ``None`` for the engine's own
    architectures, which service/model_cost.py computes."""
    if not isinstance(body.architecture, LibraryArchitecture):
        return None

    def dataset_shape() -> tuple[list[int], int]:
        with request.app.state.db.read_session() as session:
            dataset = get_owned(session, Dataset, "dataset", owner=owner, resource_id=body.dataset_id)
            description = dataset_description(dataset)
        return list(description.get("input_shape") or []), int(description.get("num_classes") or 2)

    input_shape, num_classes = await anyio.to_thread.run_sync(dataset_shape)
    check_fits(body, input_shape)
    return await measured_cost(
        body.architecture.model_dump(mode="json"),
        input_shape,
        num_classes,
        program=request.app.state.upload_validator,
        settings=settings,
    )


@router.post(
    "",
    status_code=202,
    responses=INPUT_RESPONSES,
    response_model=ModelRead,
    summary="Train a model",
    operation_id="createModel",
)
async def create_model(
    body: ModelCreate, request: Request, principal: CurrentPrincipal, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    settings = settings_of(request)
    limits.check_model(body, settings)
    measured = await _library_cost(request, principal.owner, body, settings)

    def build(session: Session) -> tuple[dict[str, Any], str, Job]:
        dataset = get_owned(session, Dataset, "dataset", owner=principal.owner, resource_id=body.dataset_id)
        pending: list[Pending] = (
            [] if usable(dataset, "dataset", "body.dataset_id") else [(dataset, "dataset", "body.dataset_id")]
        )
        description = dataset_description(dataset)
        input_shape = list(description.get("input_shape") or [])
        num_classes = description.get("num_classes")
        check_fits(body, input_shape)
        check_adversarial(body, num_classes)
        estimate = budget.enforce(training_estimate(body, description, settings, measured), settings)
        # The figures the job was budgeted on stay with the model (result.cost), for the budgets of the
        # audits that use it (service.estimates.model_cost); the worker keeps them in the final result.
        cost = dataclasses.asdict(measured) if measured is not None else None
        row = Model(
            id=new_id("model"),
            owner=principal.owner,
            name=body.name,
            dataset_id=dataset.id,
            architecture=body.architecture.model_dump(mode="json"),
            training=stored_training(body.training.model_dump(mode="json"), body.ensemble_size),
            seed=body.seed,
            input_shape=input_shape,
            num_classes=num_classes,
            result={"cost": cost} if cost is not None else None,
        )
        waiting_for = lock_waited(session, pending)
        job = create_job(
            session,
            owner=principal.owner,
            kind="train_model",
            resource_type="model",
            resource_id=row.id,
            params={
                "dataset_id": dataset.id,
                "architecture": row.architecture,
                "training": body.training.model_dump(mode="json"),
                "ensemble_size": body.ensemble_size,
                "seed": row.seed,
                **({"cost": cost} if cost is not None else {}),
            },
            max_attempts=settings.job_max_attempts,
            estimate=estimate,
            waiting_for=waiting_for,
        )
        row.job_id, row.status = job.id, RESOURCE_STATUS[job.state]
        session.add(row)
        return model_read(row, []).model_dump(mode="json"), f"/v1/models/{row.id}", job

    return await submit(request, principal=principal, idempotency_key=idempotency_key, body=body, build=build)


@router.get("", response_model=ModelPage, summary="List models, newest first", operation_id="listModels")
async def list_models(
    request: Request,
    principal: CurrentPrincipal,
    db: DB,
    limit: Limit = None,
    cursor: Cursor = None,
    status: ResourceStatus | None = None,
    dataset_id: str | None = None,
) -> Response:
    filters = []
    if status:
        filters.append(Model.status == status)
    if dataset_id:
        filters.append(Model.dataset_id == dataset_id)
    page = await resource_page(
        request, db, Model, model_read, owner=principal.owner, limit=limit, cursor=cursor, filters=filters
    )
    return model_response(ModelPage(**page))


add_item_routes(router, table=Model, kind="model", read_model=ModelRead, read=model_read)
