"""GET and DELETE of one dataset, model or audit: the same behaviour for each kind, written once.

No ``from __future__ import annotations`` here: FastAPI must see the real ``Annotated`` types of the
route functions defined inside ``add_item_routes``, not strings naming its local variables.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from service.auth import DB, CurrentPrincipal
from service.deletion import delete_resource
from service.routes.common import get_owned, model_response, problem
from service.schemas.common import ArtifactRead
from service.views import artifacts_by_resource


def add_item_routes(
    router: APIRouter,
    *,
    table: Any,
    kind: str,
    read_model: type[BaseModel],
    read: Callable[[Any, list[ArtifactRead]], BaseModel],
) -> None:
    """``GET /{<kind>_id}`` and ``DELETE /{<kind>_id}`` on ``router`` for resources stored in ``table``."""
    param = f"{kind}_id"
    ResourceId = Annotated[str, Path(alias=param, description=f"The {kind}'s id.")]

    @router.get(
        f"/{{{param}}}",
        response_model=read_model,
        summary=f"Get a {kind}",
        name=f"get_{kind}",
        operation_id=f"get{kind.capitalize()}",
    )
    def get_item(resource_id: ResourceId, principal: CurrentPrincipal, db: DB) -> Response:
        with db.read_session() as session:
            row = get_owned(session, table, kind, owner=principal.owner, resource_id=resource_id)
            return model_response(read(row, artifacts_by_resource(session, [row.id])[row.id]))

    @router.delete(
        f"/{{{param}}}",
        status_code=204,
        summary=f"Delete a {kind} and its artifacts",
        name=f"delete_{kind}",
        operation_id=f"delete{kind.capitalize()}",
        responses={409: problem("Its job is still running, or other resources use it (problem+json).")},
    )
    def delete_item(
        resource_id: ResourceId, request: Request, principal: CurrentPrincipal, db: DB
    ) -> Response:
        delete_resource(
            db,
            request.app.state.store,
            lambda session: get_owned(session, table, kind, owner=principal.owner, resource_id=resource_id),
            kind=kind,
        )
        return Response(status_code=204)
