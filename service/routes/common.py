"""Helpers the resource routes share: owner-scoped get and list, and the common parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Header, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import Problem, not_found
from service.ids import looks_like
from service.pagination import paginate
from service.settings import Settings
from service.views import artifacts_by_resource

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe key: a repeat with the same body replays the response.",
    ),
]
Limit = Annotated[
    int | None, Query(ge=1, le=1000, description="Page size (server default and maximum apply).")
]
Cursor = Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page.")]

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key (problem+json)."},
    404: {"description": "No such resource for this owner (problem+json)."},
    422: {"description": "The request is invalid; `errors` names each field (problem+json)."},
}


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """Serialize an already validated response model once (FastAPI would validate it a second time)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def get_owned(session: Session, table: Any, kind: str, *, owner: str, resource_id: str) -> Any:
    """The row, or 404 when it does not exist *or belongs to another owner* (no existence leak)."""
    if not looks_like(kind, resource_id):
        raise not_found(kind, resource_id)
    row = session.scalar(select(table).where(table.id == resource_id, table.owner == owner))
    if row is None:
        raise not_found(kind, resource_id)
    return row


def require_ready(row: Any, kind: str, field: str) -> None:
    if row.status != "ready":
        raise Problem(
            409,
            f"{kind} {row.id} is {row.status}, not ready; wait for its job {row.job_id}",
            slug="not-ready",
            field=field,
        )


def list_owned(
    session: Session,
    table: Any,
    *,
    owner: str,
    settings: Settings,
    limit: int | None,
    cursor: str | None,
    filters: Iterable[Any] = (),
) -> tuple[list, str | None]:
    """One page of the owner's rows, newest first, and the cursor of the next page."""
    size = min(limit or settings.page_size_default, settings.page_size_max)
    query = select(table).where(table.owner == owner, *filters)
    return paginate(session, query, table, limit=size, cursor=cursor)


def resource_page(
    request: Request,
    db: Database,
    table: Any,
    read: Callable,
    *,
    owner: str,
    limit: int | None,
    cursor: str | None,
    filters: Iterable[Any] = (),
) -> dict[str, Any]:
    """A page of datasets, models or audits, each with its artifacts (one query for the whole page)."""
    with db.read_session() as session:
        rows, next_cursor = list_owned(
            session,
            table,
            owner=owner,
            settings=settings_of(request),
            limit=limit,
            cursor=cursor,
            filters=filters,
        )
        artifacts = artifacts_by_resource(session, [r.id for r in rows])
    return {"data": [read(r, artifacts[r.id]) for r in rows], "next_cursor": next_cursor}
