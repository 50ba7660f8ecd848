"""/v1/jobs: follow and cancel the work behind each resource."""

from __future__ import annotations

import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from service.auth import DB, CurrentPrincipal, Principal
from service.db import Database
from service.errors import Problem, not_found
from service.ids import looks_like
from service.jobstore import TERMINAL_STATES, CancelConflict, cancel_job
from service.models import Job
from service.routes.common import PROBLEM_RESPONSES, Cursor, Limit, list_owned, model_response, settings_of
from service.schemas.common import JobState, Page
from service.schemas.jobs import JobRead
from service.views import job_read

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=PROBLEM_RESPONSES)

_WAIT_POLL_SECONDS = 0.25


@router.get("", response_model=Page[JobRead], summary="List jobs, newest first")
def list_jobs(
    request: Request,
    principal: CurrentPrincipal,
    db: DB,
    limit: Limit = None,
    cursor: Cursor = None,
    state: JobState | None = None,
    kind: str | None = None,
    resource_id: str | None = None,
):
    filters = []
    if state:
        filters.append(Job.state == state)
    if kind:
        filters.append(Job.kind == kind)
    if resource_id:
        filters.append(Job.resource_id == resource_id)
    with db.read_session() as session:
        rows, next_cursor = list_owned(
            session,
            Job,
            owner=principal.owner,
            settings=settings_of(request),
            limit=limit,
            cursor=cursor,
            filters=filters,
        )
    return model_response(Page[JobRead](data=[job_read(r) for r in rows], next_cursor=next_cursor))


def _read_job(db: Database, principal: Principal, job_id: str) -> JobRead:
    """The hot path of polling clients: one Core query, no ORM session."""
    if not looks_like("job", job_id):
        raise not_found("job", job_id)
    query = select(Job.__table__).where(Job.id == job_id, Job.owner == principal.owner)
    with db.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise not_found("job", job_id)
    return JobRead.model_validate(row._mapping)


@router.get("/{job_id}", response_model=JobRead, summary="Get a job (optionally wait for it to finish)")
async def get_job(
    job_id: str,
    principal: CurrentPrincipal,
    db: DB,
    wait: Annotated[
        float, Query(ge=0, le=60, description="Seconds to wait for the job to finish before answering.")
    ] = 0,
):
    job = await anyio.to_thread.run_sync(_read_job, db, principal, job_id)
    deadline = time.monotonic() + wait
    while job.state not in TERMINAL_STATES and time.monotonic() < deadline:
        await anyio.sleep(min(_WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        job = await anyio.to_thread.run_sync(_read_job, db, principal, job_id)
    return model_response(job)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobRead,
    summary="Cancel a job",
    responses={409: {"description": "The job already succeeded or failed (problem+json)."}},
)
def cancel(job_id: str, principal: CurrentPrincipal, db: DB):
    """A queued job is canceled at once; a running one moves to ``canceling`` and stops at its next
    progress point, ending ``canceled``. Canceling a canceled job is a no-op."""
    if not looks_like("job", job_id):
        raise not_found("job", job_id)
    try:
        job = cancel_job(db, owner=principal.owner, job_id=job_id)
    except CancelConflict as exc:
        raise Problem(409, str(exc), slug="job-finished") from exc
    if job is None:
        raise not_found("job", job_id)
    return model_response(job_read(job), status_code=202)
