"""The job state machine, kept in the database: the single source of truth both executors share.

States: ``queued -> running -> succeeded | failed``; ``queued -> canceled``; ``running -> canceling ->
canceled``; and ``waiting -> queued | failed | canceled`` for a job created before its inputs were ready
(``waiting_for`` lists those inputs; see :func:`settle_waiting`). Every transition a worker makes is a
compare-and-set on ``(id, worker_id, state)`` so a worker that lost its lease (it was presumed dead and the
job re-queued) can no longer change the job. The resource a job produces mirrors the job's state in its
``status`` and is updated in the same transaction.

The functions here are plain SQL over :mod:`service.models`; torch-free, shared by the API (create,
cancel, list) and the worker's runner (claim, heartbeat, progress, finish, reap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, func, select, update
from sqlalchemy.orm import Session

from service.db import Database
from service.ids import PREFIXES, new_id
from service.models import RESOURCE_TABLES, Job, utcnow

WAITING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELING, CANCELED = (
    "waiting",
    "queued",
    "running",
    "succeeded",
    "failed",
    "canceling",
    "canceled",
)
JOB_STATES = (WAITING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELING, CANCELED)
CANCELED_BY_USER = "canceled by the user"
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELED})
ACTIVE_STATES = (RUNNING, CANCELING)
RESOURCE_STATUS = {
    WAITING: "waiting",
    QUEUED: "queued",
    RUNNING: "running",
    CANCELING: "running",
    SUCCEEDED: "ready",
    FAILED: "failed",
    CANCELED: "canceled",
}


class CancelConflict(Exception):
    """The job already finished; there is nothing to cancel."""


def create_job(
    session: Session,
    *,
    owner: str,
    kind: str,
    resource_type: str,
    resource_id: str,
    params: dict[str, Any],
    max_attempts: int,
    estimate: dict[str, Any] | None = None,
    waiting_for: list[str] | None = None,
) -> Job:
    """A new job: ``queued``, or ``waiting`` when ``waiting_for`` names inputs (resource ids) not ready yet.
    The caller locked those inputs' rows (:func:`lock_input`), so none of them can finish unseen."""
    now = utcnow()
    job = Job(
        id=new_id("job"),
        owner=owner,
        kind=kind,
        state=WAITING if waiting_for else QUEUED,
        waiting_for=list(waiting_for or []),
        resource_type=resource_type,
        resource_id=resource_id,
        params=params,
        estimate=estimate,
        progress=0.0,
        attempt=1,
        max_attempts=max_attempts,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    return job


def set_resource_status(
    session: Session, job: Job, state: str, *, error: str | None = None, **fields: Any
) -> None:
    table = RESOURCE_TABLES[job.resource_type]
    values = {"status": RESOURCE_STATUS[state], "updated_at": utcnow(), **fields}
    if error is not None:
        values["error"] = error
    session.execute(update(table).where(table.id == job.resource_id).values(**values))


def _locked(session: Session, job_id: str) -> Job | None:
    """The job row, locked for the rest of the transaction (SQLite: the write transaction holds the lock)."""
    return session.scalar(select(Job).where(Job.id == job_id).with_for_update())


# --- API side ---------------------------------------------------------------------------------------


def cancel_job(db: Database, *, owner: str, job_id: str, cascade: bool = False) -> Job | None:
    """Waiting and queued jobs are canceled at once; running ones are asked to stop (``canceling``) and end
    ``canceled`` at their next progress point. The jobs waiting for this one's resource then fail, naming
    it; with ``cascade`` they (and those waiting for them, down the chain) are canceled instead. Returns None
    when the job does not exist for ``owner``."""
    with db.write_session() as session:
        job = session.scalar(select(Job).where(Job.id == job_id, Job.owner == owner).with_for_update())
        if job is None:
            return None
        if job.state in (SUCCEEDED, FAILED):
            raise CancelConflict(f"job {job.id} already {job.state}")
        if cascade:
            _cancel_dependents(session, job)
        if job.state in (WAITING, QUEUED):
            finish(session, job, CANCELED, error=CANCELED_BY_USER)
        elif job.state == RUNNING:
            job.state, job.updated_at = CANCELING, utcnow()
        return job


def _cancel_dependents(session: Session, job: Job) -> None:
    """Cancel the waiting jobs that need ``job``'s resource, directly or through another waiting job.
    Inputs are always older than the jobs that wait for them, so one pass oldest first finds the chain."""
    gone = {job.resource_id}
    for waiting in _waiting_jobs(session, job.owner):
        hit = next((r for r in waiting.waiting_for or [] if r in gone), None)
        if waiting.id != job.id and hit is not None:
            _end(session, waiting, CANCELED, error=f"canceled with its input {_input_name(hit)}")
            gone.add(waiting.resource_id)


# --- waiting for inputs -----------------------------------------------------------------------------

_KIND_OF_PREFIX = {PREFIXES[kind]: kind for kind in RESOURCE_TABLES}


def _input_name(resource_id: str) -> str:
    """``dataset ds_...``: an input as an error message names it."""
    return f"{_KIND_OF_PREFIX.get(resource_id.split('_', 1)[0], 'resource')} {resource_id}"


def lock_input(session: Session, row: Any) -> Any:
    """Re-read a not-ready input's row locked for the rest of the transaction. A job finishing that input
    updates this row before it looks for jobs waiting on it (:func:`finish`), so either that job sees the
    waiting job this transaction creates, or this read sees the input's final status: an input finishing
    while its dependent is submitted can never leave the dependent waiting unseen. (SQLite: the write
    transaction already holds the database's write lock.)"""
    table = type(row)
    locked = session.scalar(
        select(table).where(table.id == row.id).with_for_update().execution_options(populate_existing=True)
    )
    return locked if locked is not None else row


def _waiting_jobs(session: Session, owner: str | None) -> list[Job]:
    """The waiting jobs, oldest first, locked; those another transaction holds are skipped rather than
    waited for (a job being canceled, or looked at by another job ending: whoever holds it settles it, and
    the reaper's pass catches what both missed), so that ending a job never waits in a circle."""
    query = (
        select(Job)
        .where(Job.state == WAITING)
        .order_by(Job.created_at, Job.id)
        .with_for_update(skip_locked=True)
    )
    if owner is not None:
        query = query.where(Job.owner == owner)
    return list(session.scalars(query))


def _input_problem(session: Session, resource_id: str) -> tuple[str | None, bool]:
    """(the error a job waiting on this input ends with, or None; whether the input is ready)."""
    kind = _KIND_OF_PREFIX.get(resource_id.split("_", 1)[0])
    table = RESOURCE_TABLES.get(kind or "")
    row = (
        session.execute(select(table.status, table.error).where(table.id == resource_id)).first()
        if table
        else None
    )
    name = _input_name(resource_id)
    if row is None:
        return f"input {name} was deleted", False
    status, error = row
    if status == "failed":
        return f"input {name} failed: {error or 'no reason given'}", False
    if status == "canceled":
        return f"input {name} was canceled", False
    return None, status == "ready"


def settle_waiting(session: Session, owner: str | None = None) -> list[str]:
    """Move on the waiting jobs (of ``owner``, or everyone's) whose inputs have settled: a job whose inputs
    are all ready becomes ``queued``; one with an input failed, canceled or gone ends ``failed`` at once,
    naming that input (and its error). Oldest first, so a failure travels down a chain (an audit waiting on
    a model waiting on a dataset) in one pass. Returns the ids queued, for the caller to dispatch once
    committed. :func:`finish` calls this for the owner of every job it ends; the reaper calls it for all,
    so a wake-up lost to a crash between the two is only late."""
    queued = []
    for job in _waiting_jobs(session, owner):
        pending = []
        for resource_id in job.waiting_for or []:
            error, ready = _input_problem(session, resource_id)
            if error is not None:
                _end(session, job, FAILED, error=error)
                break
            if not ready:
                pending.append(resource_id)
        else:
            if pending and pending == list(job.waiting_for or []):
                continue  # nothing changed
            job.waiting_for, job.updated_at = pending, utcnow()
            if not pending:
                job.state = QUEUED
                set_resource_status(session, job, QUEUED)
                queued.append(job.id)
    return queued


def settle_all_waiting(db: Database) -> list[str]:
    """The reaper's pass over every waiting job (see :func:`settle_waiting`); the ids it queued."""
    with db.read_session() as session:
        if session.scalar(select(Job.id).where(Job.state == WAITING).limit(1)) is None:
            return []
    with db.write_session() as session:
        return settle_waiting(session)


# --- worker side ------------------------------------------------------------------------------------


def _rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE matched (Session.execute is typed as returning rows; an UPDATE's is a cursor's)."""
    return cast("CursorResult[Any]", result).rowcount


def claim_job(db: Database, *, job_id: str, worker_id: str, lease_seconds: float) -> Job | None:
    """Compare-and-set ``queued -> running``. None when another worker won or the job is not queued."""
    now = utcnow()
    with db.write_session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == QUEUED)
            .values(
                state=RUNNING,
                worker_id=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=now,
                updated_at=now,
                error=None,
            )
        )
        if _rowcount(result) != 1:
            return None
        job = session.get_one(Job, job_id)  # the row the UPDATE above matched
        set_resource_status(session, job, RUNNING)
        return job


def renew_lease(
    db: Database,
    *,
    job_id: str,
    worker_id: str,
    lease_seconds: float,
    progress: float | None = None,
    stage: str | None = None,
    detail: dict[str, Any] | None = None,
) -> str | None:
    """Extend the lease (and record whichever of progress, stage, detail are given). Returns the job's
    state (``running`` or ``canceling``), or None when this worker no longer holds the job."""
    now = utcnow()
    values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds), "updated_at": now}
    if progress is not None:
        values["progress"] = max(0.0, min(1.0, float(progress)))
    if stage is not None:
        values["stage"] = stage
    if detail is not None:
        values["detail"] = detail
    with db.write_session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker_id == worker_id, Job.state.in_(ACTIVE_STATES))
            .values(**values)
        )
        if _rowcount(result) != 1:
            return None
        return session.scalar(select(Job.state).where(Job.id == job_id))


def lock_own_job(session: Session, *, job_id: str, worker_id: str) -> Job | None:
    """Inside a finishing transaction: the job row if this worker still holds it, else None."""
    job = _locked(session, job_id)
    if job is None or job.worker_id != worker_id or job.state not in ACTIVE_STATES:
        return None
    return job


def _end(session: Session, job: Job, state: str, *, error: str | None = None, **resource_fields: Any) -> None:
    now = utcnow()
    job.state, job.finished_at, job.updated_at, job.lease_expires_at = state, now, now, None
    if state == SUCCEEDED:
        job.progress = 1.0
    job.error = error
    set_resource_status(session, job, state, error=error, **resource_fields)


def finish(
    session: Session, job: Job, state: str, *, error: str | None = None, **resource_fields: Any
) -> list[str]:
    """Move a locked job to a terminal state and its resource with it; then the owner's jobs waiting for
    inputs move on (:func:`settle_waiting`). Returns the ids of the jobs that became ``queued``: the caller
    dispatches them once the transaction committed."""
    _end(session, job, state, error=error, **resource_fields)
    return settle_waiting(session, job.owner)


def end_job(db: Database, *, job_id: str, worker_id: str, state: str, error: str | None = None) -> bool:
    """Fail or cancel a job this worker holds (no results are recorded). False if the lease was lost."""
    with db.write_session() as session:
        job = lock_own_job(session, job_id=job_id, worker_id=worker_id)
        if job is None:
            return False
        finish(session, job, state, error=error)
        return True


def release_job(db: Database, *, job_id: str, worker_id: str) -> bool:
    """Put a job back in the queue without spending an attempt (graceful worker shutdown)."""
    with db.write_session() as session:
        job = lock_own_job(session, job_id=job_id, worker_id=worker_id)
        if job is None:
            return False
        if job.state == CANCELING:
            finish(session, job, CANCELED, error=CANCELED_BY_USER)
            return True
        job.state, job.worker_id, job.lease_expires_at, job.dispatched_at = QUEUED, None, None, None
        job.updated_at = utcnow()
        set_resource_status(session, job, QUEUED)
        return True


def expire_lease(db: Database, *, job_id: str, worker_id: str) -> None:
    """The process running the job died: let the next reaper pass handle the job now."""
    with db.write_session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker_id == worker_id, Job.state.in_(ACTIVE_STATES))
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def time_limit_error(limit: float) -> str:
    return f"exceeded the time limit of {limit:g} s"


def _over_time(job: Job, now: datetime, time_limit: Callable[[str], float] | None) -> float | None:
    """The job's limit when this attempt has run longer than it, else None."""
    if time_limit is None or job.started_at is None:
        return None
    limit = time_limit(job.kind)
    return limit if now - job.started_at > timedelta(seconds=limit) else None


def reap_expired(
    db: Database,
    *,
    now: datetime | None = None,
    time_limit: Callable[[str], float] | None = None,
    on_ended: Callable[[str], None] | None = None,
) -> list[str]:
    """Re-queue jobs whose lease expired (their worker died) with attempt+1, or fail them once they used
    up their attempts; a job that was being canceled ends canceled, and one that ran past its time limit
    (``time_limit(kind)`` seconds; its worker stopped renewing or was killed) ends failed, not retried.
    Returns the ids re-queued. ``on_ended(job_id)`` is called for each job this pass ended (the worker
    removes the job's files: no attempt is left to do it)."""
    now = now or utcnow()
    ended = []
    with db.read_session() as session:
        expired = session.execute(
            select(Job.id, Job.lease_expires_at).where(
                Job.state.in_(ACTIVE_STATES), Job.lease_expires_at < now
            )
        ).all()
    requeued = []
    for job_id, lease in expired:
        with db.write_session() as session:
            job = _locked(session, job_id)
            if job is None or job.state not in ACTIVE_STATES or job.lease_expires_at != lease:
                continue  # the worker renewed in between, or someone else reaped it
            limit = _over_time(job, now, time_limit)
            if job.state == CANCELING:
                finish(session, job, CANCELED, error=CANCELED_BY_USER)
            elif limit is not None:
                finish(session, job, FAILED, error=time_limit_error(limit))
            elif job.attempt < job.max_attempts:
                job.state, job.worker_id, job.lease_expires_at, job.dispatched_at = QUEUED, None, None, None
                job.attempt += 1
                job.updated_at = now
                set_resource_status(session, job, QUEUED)
                requeued.append(job_id)
            else:
                finish(
                    session,
                    job,
                    FAILED,
                    error="the worker running this job stopped responding on each of "
                    f"{job.max_attempts} attempts",
                )
            if job.state in TERMINAL_STATES:
                ended.append(job_id)
    if on_ended is not None:
        for job_id in ended:
            on_ended(job_id)
    return requeued


def overdue_job_ids(
    db: Database, job_ids: Iterable[str], *, time_limit: Callable[[str], float], grace: float
) -> list[str]:
    """Of ``job_ids``, the active jobs whose attempt has run past its time limit plus ``grace`` seconds:
    their process ignored the soft stop (no progress point) and is to be killed."""
    ids = list(job_ids)
    if not ids:
        return []
    now = utcnow()
    with db.read_session() as session:
        rows = session.execute(
            select(Job.id, Job.kind, Job.started_at).where(Job.id.in_(ids), Job.state.in_(ACTIVE_STATES))
        ).all()
    return [
        job_id
        for job_id, kind, started in rows
        if started is not None and now - started > timedelta(seconds=time_limit(kind) + grace)
    ]


def canceling_job_workers(db: Database, job_ids: Iterable[str]) -> dict[str, str]:
    """Of ``job_ids``, the jobs asked to cancel while running (``canceling``), each with the worker that holds
    it: an executor kills those that reach no progress point in time."""
    ids = list(job_ids)
    if not ids:
        return {}
    with db.read_session() as session:
        rows = session.execute(
            select(Job.id, Job.worker_id).where(Job.id.in_(ids), Job.state == CANCELING)
        ).all()
    return {job_id: worker_id for job_id, worker_id in rows if worker_id is not None}


def queued_job_ids(db: Database, *, exclude: Iterable[str] = (), limit: int = 10) -> list[str]:
    """Oldest queued jobs first (the local executor's poll)."""
    exclude = list(exclude)
    query = select(Job.id).where(Job.state == QUEUED).order_by(Job.created_at).limit(limit + len(exclude))
    with db.read_session() as session:
        ids = [i for i in session.scalars(query) if i not in exclude]
    return ids[:limit]


def undispatched_job_ids(db: Database, *, before: datetime, limit: int = 100) -> list[str]:
    """Queued jobs, last changed before ``before``, that no broker message was recorded for (the API's
    send failed). A grace period keeps this sweep from racing the API's own dispatch."""
    query = (
        select(Job.id)
        .where(Job.state == QUEUED, Job.dispatched_at.is_(None), Job.updated_at < before)
        .order_by(Job.created_at)
        .limit(limit)
    )
    with db.read_session() as session:
        return list(session.scalars(query))


def dispatched_queued_counts(db: Database, *, before: datetime) -> tuple[int, list[str]]:
    """For the broker sweep: how many queued jobs have a message recorded as sent, and which of them were
    last sent before ``before`` (oldest first), the ones to send again when the broker lost messages."""
    sent = (Job.state == QUEUED) & Job.dispatched_at.is_not(None)
    with db.read_session() as session:
        total = session.scalar(select(func.count()).select_from(Job).where(sent)) or 0
        stale = list(
            session.scalars(
                select(Job.id).where(sent, Job.dispatched_at < before).order_by(Job.dispatched_at).limit(100)
            )
        )
    return total, stale


def mark_dispatched(db: Database, job_ids: Iterable[str]) -> None:
    ids = list(job_ids)
    if not ids:
        return
    with db.write_session() as session:
        session.execute(update(Job).where(Job.id.in_(ids)).values(dispatched_at=utcnow()))
