"""/v1/jobs: follow and cancel the work behind each resource."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import Connection, bindparam, select
from starlette.types import Receive, Scope, Send

from service.auth import DB, CurrentPrincipal, Principal
from service.caps import KeySlots
from service.db import DATABASE_UNAVAILABLE
from service.errors import Problem, not_found
from service.ids import looks_like
from service.job_ends import JobEnds
from service.jobstore import TERMINAL_STATES, CancelConflict, cancel_job
from service.models import Job
from service.routes.common import (
    BODY_RESPONSES,
    PROBLEM_RESPONSES,
    Cursor,
    Limit,
    model_response,
    owned_page,
    problem,
    settings_of,
)
from service.schemas.common import JobState
from service.schemas.jobs import JobPage, JobRead
from service.views import job_read

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=PROBLEM_RESPONSES)

_WAIT_POLL_SECONDS = 0.25
# A comment line this often keeps proxies and browsers from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0
# What a job event reports; a change in any of these is worth a new event (eta_seconds alone is not).
_EVENT_FIELDS = ("state", "progress", "stage", "detail", "attempt", "error", "updated_at")


@router.get("", response_model=JobPage, summary="List jobs, newest first", operation_id="listJobs")
async def list_jobs(
    request: Request,
    principal: CurrentPrincipal,
    db: DB,
    limit: Limit = None,
    cursor: Cursor = None,
    state: JobState | None = None,
    kind: str | None = None,
    resource_id: str | None = None,
) -> Response:
    filters = []
    if state:
        filters.append(Job.state == state)
    if kind:
        filters.append(Job.kind == kind)
    if resource_id:
        filters.append(Job.resource_id == resource_id)
    rows, next_cursor, _ = await owned_page(
        request, db, Job, owner=principal.owner, limit=limit, cursor=cursor, filters=filters
    )
    return model_response(JobPage(data=[job_read(r) for r in rows], next_cursor=next_cursor))


# Built once: constructing the statement cost a third of the request's CPU (BENCHMARKS.md).
_JOB_OF_OWNER = select(Job.__table__).where(Job.id == bindparam("job_id"), Job.owner == bindparam("owner"))


def _read_job(conn: Connection, principal: Principal, job_id: str) -> JobRead:
    """The hot path of polling clients: one Core query, no ORM session."""
    if not looks_like("job", job_id):
        raise not_found("job", job_id)
    row = conn.execute(_JOB_OF_OWNER, {"job_id": job_id, "owner": principal.owner}).first()
    if row is None:
        raise not_found("job", job_id)
    return JobRead.model_validate(row._mapping)


@router.get(
    "/{job_id}",
    response_model=JobRead,
    summary="Get a job (optionally wait for it to finish)",
    operation_id="getJob",
)
async def get_job(
    job_id: str,
    request: Request,
    principal: CurrentPrincipal,
    db: DB,
    wait: Annotated[
        float, Query(ge=0, le=60, description="Seconds to wait for the job to finish before answering.")
    ] = 0,
) -> Response:
    """With `wait`, a job that has not ended yet is answered when it ends or the time is up, whichever comes
    first; a key may have SBAUDIT_MAX_LONG_POLLS_PER_KEY such requests waiting at once (429 past it)."""
    job = await db.run_read(_read_job, principal, job_id)
    if wait <= 0 or job.state in TERMINAL_STATES:
        return model_response(job)
    long_polls: KeySlots = request.app.state.long_polls
    job_ends: JobEnds = request.app.state.job_ends
    with long_polls.hold(principal.key_id):
        deadline = time.monotonic() + wait
        while job.state not in TERMINAL_STATES and time.monotonic() < deadline:
            # Woken at once when the job's process ends here (embedded mode); else the next interval.
            await job_ends.sleep(job_id, min(_WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            if await request.is_disconnected():
                break  # no one is waiting for the answer: give the slot back now
            job = await db.run_read(_read_job, principal, job_id)
    return model_response(job)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobRead,
    summary="Cancel a job",
    operation_id="cancelJob",
    responses={409: problem("The job already succeeded or failed (problem+json)."), **BODY_RESPONSES},
)
def cancel(
    job_id: str,
    principal: CurrentPrincipal,
    db: DB,
    cascade: Annotated[
        bool,
        Query(description="Also cancel the jobs waiting for this one's result, down the chain."),
    ] = False,
) -> Response:
    """A waiting or queued job is canceled at once; a running one moves to ``canceling`` and stops at its
    next progress point, ending ``canceled``; one that reaches none within SBAUDIT_CANCEL_GRACE_SECONDS is
    killed and ends ``canceled`` then. Canceling a canceled job is a no-op. Jobs waiting for this one's
    resource fail at once, naming it; with ``cascade=true`` they are canceled instead."""
    if not looks_like("job", job_id):
        raise not_found("job", job_id)
    try:
        job = cancel_job(db, owner=principal.owner, job_id=job_id, cascade=cascade)
    except CancelConflict as exc:
        raise Problem(409, str(exc), slug="job-finished") from exc
    if job is None:
        raise not_found("job", job_id)
    return model_response(job_read(job), status_code=202)


def sse_message(event: str, data: str) -> str:
    """One Server-Sent Event; ``data`` is a single line (JSON dumped without newlines)."""
    return f"event: {event}\ndata: {data}\n\n"


async def job_event_stream(
    read: Callable[[], Awaitable[JobRead | None]],
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_seconds: float,
    max_seconds: float,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    first: JobRead | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> AsyncIterator[str]:
    """The events of one job: ``job`` now and on every change, ``end`` after a terminal state.

    ``read`` returns the job, or None once it is gone (its resource was deleted): the stream then just
    closes. Past ``max_seconds`` it closes without ``end``; an EventSource reconnects and carries on.
    Between reads it calls ``sleep(seconds)``, which may return early (the job ended).
    """
    started = last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    job = first if first is not None else await read()
    seen = None
    while job is not None:
        fingerprint = tuple(getattr(job, name) for name in _EVENT_FIELDS)
        now = time.monotonic()
        if fingerprint != seen:
            seen, last_sent = fingerprint, now
            yield sse_message("job", job.model_dump_json())
            if job.state in TERMINAL_STATES:
                yield sse_message("end", f'{{"state": "{job.state}"}}')
                return
        elif now - last_sent >= keepalive_seconds:
            last_sent = now
            yield ": keep-alive\n\n"
        if now - started >= max_seconds or await is_disconnected():
            return
        await sleep(min(poll_seconds, max(0.0, started + max_seconds - now)))
        job = await read()


@router.get(
    "/{job_id}/events",
    summary="Follow a job's progress (Server-Sent Events)",
    operation_id="streamJobEvents",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`retry: 2000`, then `event: job` with the job (as GET /v1/jobs/{id}) now and on "
            'every change, `: keep-alive` comments every 15 s, and `event: end` with `{"state": ...}` '
            "once the job succeeded, failed or was canceled. The stream closes after `end`, or without "
            "it after SBAUDIT_EVENTS_MAX_SECONDS (reconnect to carry on).",
        }
    },
)
async def job_events(job_id: str, request: Request, principal: CurrentPrincipal, db: DB) -> StreamingResponse:
    """A key may have SBAUDIT_MAX_STREAMS_PER_KEY streams of jobs that have not ended open at once (429
    past it)."""
    first = await db.run_read(_read_job, principal, job_id)  # 404 before streaming
    settings = settings_of(request)
    streams: KeySlots = request.app.state.streams
    release = None if first.state in TERMINAL_STATES else streams.take(principal.key_id)

    last = first

    async def read() -> JobRead | None:
        """The job now; None once it is gone; the last one read while the database is unreachable (the
        stream then only sends keep-alives until it is back: the headers are out, a 503 no longer can be)."""
        nonlocal last
        try:
            last = await db.run_read(_read_job, principal, job_id)
        except Problem:
            return None
        except DATABASE_UNAVAILABLE:
            pass
        return last

    job_ends: JobEnds = request.app.state.job_ends

    async def sleep(seconds: float) -> None:
        await job_ends.sleep(job_id, seconds)

    stream = job_event_stream(
        read,
        request.is_disconnected,
        poll_seconds=settings.poll_interval_seconds,
        max_seconds=settings.events_max_seconds,
        first=first,
        sleep=sleep,
    )
    return _SlotStream(
        stream,
        release=release,
        media_type="text/event-stream; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _SlotStream(StreamingResponse):
    """A streaming response that gives its key's stream slot back (``release``; None: it holds none) when it
    ends, however it ends: the job ended, the stream's time was up, the client went away (Starlette then
    cancels the stream, which may be waiting to send rather than inside the generator, so the generator's
    own ``finally`` could run late)."""

    def __init__(
        self, content: AsyncIterator[str], *, release: Callable[[], None] | None, **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.release is not None:
                self.release()
