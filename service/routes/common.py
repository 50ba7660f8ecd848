"""Helpers the resource routes share: owner-scoped get and list, and the common parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Header, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import PROBLEM_JSON, PROBLEM_SCHEMA_REF, Problem, not_found
from service.ids import looks_like
from service.pagination import paginate
from service.schemas.common import ArtifactRead
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


def problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response entry for a problem+json answer: the shared ``Problem`` schema, so a generated
    client has one error type rather than one per operation and status."""
    out: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA_REF}},
    }
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: problem(
        "Missing or invalid API key (problem+json).", {"WWW-Authenticate": {"schema": {"type": "string"}}}
    ),
    404: problem("No such resource for this owner (problem+json)."),
    422: problem("The request is invalid; `errors` names each field (problem+json)."),
    429: problem(
        "Too many requests for this key, or too many jobs, event streams or long polls open at once; retry "
        "after Retry-After seconds (problem+json).",
        _RETRY_AFTER,
    ),
    503: problem(
        "The database is unavailable; retry after Retry-After seconds (problem+json).", _RETRY_AFTER
    ),
}
# Every POST: the JSON body limit (SBAUDIT_MAX_JSON_BYTES, service/body_limit.py) applies to them all.
BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: problem("The request body exceeds SBAUDIT_MAX_JSON_BYTES (problem+json)."),
}
# The POSTs that create a resource and queue its job: also refused while the owner's storage is full.
CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **BODY_RESPONSES,
    507: problem("Your storage quota (SBAUDIT_OWNER_QUOTA_BYTES) is used up (problem+json)."),
}


# The POSTs whose inputs may not be ready yet (models, audits): the new job waits for those, but an input that
# failed or was canceled never will be.
INPUT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **CREATE_RESPONSES,
    409: problem(
        "An input (`dataset_id`, `model_id`) failed or was canceled; names the field (problem+json)."
    ),
}


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """Serialize an already validated response model once (FastAPI would validate it a second time)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


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


def _list_owned(
    session: Session,
    table: Any,
    *,
    owner: str,
    settings: Settings,
    limit: int | None,
    cursor: str | None,
    filters: Iterable[Any],
) -> tuple[list[Any], str | None]:
    size = min(limit or settings.page_size_default, settings.page_size_max)
    query = select(table).where(table.owner == owner, *filters)
    return paginate(session, query, table, limit=size, cursor=cursor)


async def owned_page(
    request: Request,
    db: Database,
    table: Any,
    *,
    owner: str,
    limit: int | None,
    cursor: str | None,
    filters: Iterable[Any] = (),
    with_artifacts: bool = False,
) -> tuple[list[Any], str | None, dict[str, list[ArtifactRead]]]:
    """One page of the owner's rows, newest first, the cursor of the next page and, ``with_artifacts``, each
    row's artifacts (one query for the whole page). Read on the event loop (``Database.run_read``)."""
    settings = settings_of(request)

    def read(conn: Connection) -> tuple[list[Any], str | None, dict[str, list[ArtifactRead]]]:
        with Session(bind=conn) as session:
            rows, next_cursor = _list_owned(
                session, table, owner=owner, settings=settings, limit=limit, cursor=cursor, filters=filters
            )
            artifacts = artifacts_by_resource(session, [r.id for r in rows]) if with_artifacts else {}
        return rows, next_cursor, artifacts

    return await db.run_read(read)


async def resource_page(
    request: Request,
    db: Database,
    table: Any,
    read: Callable[[Any, list[ArtifactRead]], BaseModel],
    *,
    owner: str,
    limit: int | None,
    cursor: str | None,
    filters: Iterable[Any] = (),
) -> dict[str, Any]:
    """A page of datasets, models or audits, each with its artifacts."""
    rows, next_cursor, artifacts = await owned_page(
        request, db, table, owner=owner, limit=limit, cursor=cursor, filters=filters, with_artifacts=True
    )
    return {"data": [read(r, artifacts[r.id]) for r in rows], "next_cursor": next_cursor}
