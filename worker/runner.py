"""The job runner both executors use: claim, lease + heartbeat, progress, cancel, record results.

``run_job(job_id)`` is all an executor calls, in whatever process it runs jobs in:

1. claim the job by compare-and-set (a duplicate delivery, or a job someone canceled, is a no-op);
2. start a heartbeat thread that renews the lease; if the lease is lost (we were presumed dead and the job
   re-queued) or the user asks to cancel, it raises a flag the progress callback acts on;
3. run the handler for the job's kind; its engine calls report progress through ``JobContext.progress``,
   which writes it to the database at most once per ``progress_interval_seconds`` and raises
   :class:`JobCanceled` / :class:`JobInterrupted` / :class:`LeaseLost` / :class:`JobTimeLimit` there,
   stopping the engine (a job past its time limit ends ``failed`` with the reason, and is not retried);
4. store the handler's output files in the artifact store (atomically), then in *one* transaction, and only
   if we still hold the job: insert the artifact rows, fill in the resource, mark the job succeeded. A job
   that fails or is canceled records nothing; a job that loses its lease records nothing either, so a
   re-queued attempt never produces a second resource. A result that goes elsewhere too (an audit's
   MLflow run) is published between the two steps, by the handler's ``Publisher``.

Training resumes after a crash because the checkpoint path is derived from the job id, not the attempt.
This module does not import torch; handlers do, inside the job process.

It is over 400 lines on purpose: the order of claim, heartbeat, handler, storing files and the final
commit is the argument that a job ends exactly once with one result, and it reads top to bottom here.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import os
import secrets
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from service import jobstore
from service.db import DATABASE_UNAVAILABLE, Database
from service.ids import new_id
from service.models import Artifact, utcnow
from service.schemas.common import ArtifactRead
from service.settings import Settings
from service.storage import ArtifactStore, StoredBlob
from service.views import artifact_read
from worker import faults, job_files, memory_limit
from worker.db_retry import retry_while_unavailable

log = logging.getLogger("sbaudit.worker")

MAX_ERROR_CHARS = 2000


class JobCanceled(Exception):
    """The user canceled the job; raised at the next progress point."""


class JobInterrupted(Exception):
    """The worker is shutting down; the job goes back to the queue without spending an attempt."""


class LeaseLost(Exception):
    """Another worker owns the job now (our lease expired); stop without recording anything."""


class JobTimeLimit(Exception):
    """The job ran past its time limit (SBAUDIT_JOB_TIME_LIMIT_SECONDS); it ends failed, not retried."""

    def __init__(self, limit: float) -> None:
        super().__init__(jobstore.time_limit_error(limit))
        self.limit = limit


class JobError(Exception):
    """A handler's clear, user-facing reason for failing (bad input it could only detect at run time)."""


@dataclass
class OutputFile:
    """A file a handler produced, to be stored as an artifact of the job's resource."""

    kind: str
    path: Path
    content_type: str
    filename: str


class Publisher(Protocol):
    """Sends a job's result somewhere besides this server (an audit's MLflow run, worker/mlflow_runs.py).

    The runner calls ``publish`` once the result's files are in the artifact store and just before it records
    the result, with the artifacts as they will be recorded; the resource fields it returns are recorded with
    the handler's, in the same transaction. A failure to publish is recorded as a field, never raised: it
    does not fail the job (``publish`` reports progress, so a cancel or a shutdown can still stop the job
    there, as in a handler). If the result is then not recorded after all (canceled meanwhile, lease
    lost, database gone), ``retract`` undoes the publication, so nothing outside points at a result this
    server does not have.
    """

    def publish(self, artifacts: list[ArtifactRead]) -> dict[str, Any]: ...

    def retract(self) -> None: ...


@dataclass
class HandlerResult:
    files: list[OutputFile] = field(default_factory=list)
    # Column values for the resource row (e.g. the dataset's description, the model's metrics).
    fields: dict[str, Any] = field(default_factory=dict)
    publisher: Publisher | None = None


def new_worker_id(prefix: str = "worker") -> str:
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def jsonable(value: Any) -> Any:
    """Engine output may hold numpy/torch scalars and NaN; keep only what strict JSON (and PostgreSQL's
    jsonb) can store: non-finite numbers become null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return None
    return number


class _Lease:
    """Renews the job's lease from a daemon thread and tells the job when to stop.

    It also keeps the job's time limit: past ``deadline`` the progress callback stops the handler; a
    handler stuck without progress points gets ``grace`` seconds more, then the heartbeat stops renewing,
    the lease runs out and the reaper ends the job failed (the local executor also kills the process).
    """

    def __init__(
        self, db: Database, job_id: str, worker_id: str, settings: Settings, time_limit: float
    ) -> None:
        self.db, self.job_id, self.worker_id = db, job_id, worker_id
        self.lease_seconds = settings.job_lease_seconds
        self.time_limit = time_limit
        self.deadline = time.monotonic() + time_limit
        self.grace = settings.job_time_limit_grace_seconds
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def observe(self, state: str | None) -> None:
        if state is None:
            self.lost.set()
        elif state == jobstore.CANCELING:
            self.cancel_requested.set()

    def _run(self) -> None:
        interval = max(0.2, self.lease_seconds / 3)
        while not self._stop.wait(interval):
            if time.monotonic() > self.deadline + self.grace:
                log.warning(
                    "job %s: still running %.0f s past its time limit; no longer renewing its lease",
                    self.job_id,
                    self.grace,
                )
                return
            try:
                state = jobstore.renew_lease(
                    self.db, job_id=self.job_id, worker_id=self.worker_id, lease_seconds=self.lease_seconds
                )
            except Exception:  # a database hiccup: retry at the next beat, the lease has slack
                log.warning("heartbeat for %s failed; retrying", self.job_id, exc_info=True)
                continue
            self.observe(state)
            if state is None:
                return


@dataclass
class JobContext:
    """What a handler gets: the job's parameters, where to write, and the progress callback."""

    job_id: str
    kind: str
    owner: str
    resource_id: str
    params: dict[str, Any]
    attempt: int
    settings: Settings
    db: Database
    store: ArtifactStore
    scratch: Path
    checkpoint_path: Path
    progress: Callable[[Any], None]

    def report(self, stage: str, step: int, total: int | None = None, **metrics: Any) -> None:
        """Progress from handler code itself (outside engine calls)."""
        self.progress(_Event(stage=stage, step=step, total=total, metrics=metrics))


@dataclass(frozen=True)
class _Event:
    stage: str
    step: int
    total: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        return min(1.0, max(0.0, self.step / self.total)) if self.total else None


class _ProgressReporter:
    """The engine's progress callback: cheap on every call, a database write at most once per interval."""

    def __init__(self, db, job_id, worker_id, settings, lease: _Lease, stop_event: threading.Event | None):
        self.db, self.job_id, self.worker_id, self.settings = db, job_id, worker_id, settings
        self.lease, self.stop_event = lease, stop_event
        self.interval = settings.progress_interval_seconds
        self.last_write = -math.inf

    def __call__(self, event: Any) -> None:
        if self.lease.lost.is_set():
            raise LeaseLost(self.job_id)
        if self.stop_event is not None and self.stop_event.is_set():
            raise JobInterrupted(self.job_id)
        if self.lease.cancel_requested.is_set():
            raise JobCanceled(self.job_id)
        now = time.monotonic()
        if now >= self.lease.deadline:
            raise JobTimeLimit(self.lease.time_limit)
        if now - self.last_write < self.interval:
            return
        self.last_write = now
        fraction = getattr(event, "fraction", None)
        detail = {
            "step": getattr(event, "step", None),
            "total": getattr(event, "total", None),
            "metrics": jsonable(getattr(event, "metrics", None) or {}),
        }
        try:
            state = jobstore.renew_lease(
                self.db,
                job_id=self.job_id,
                worker_id=self.worker_id,
                lease_seconds=self.settings.job_lease_seconds,
                progress=fraction,
                stage=str(getattr(event, "stage", ""))[:40] or None,
                detail=detail,
            )
        except DATABASE_UNAVAILABLE:  # skip this report; the heartbeat keeps retrying the lease
            log.warning("job %s: progress not recorded, the database is unavailable", self.job_id)
            return
        self.lease.observe(state)
        if state is None:
            raise LeaseLost(self.job_id)
        if state == jobstore.CANCELING:
            raise JobCanceled(self.job_id)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:MAX_ERROR_CHARS]


def run_job(
    job_id: str,
    *,
    settings: Settings,
    db: Database,
    worker_id: str | None = None,
    stop_event: threading.Event | None = None,
    handlers: dict[str, Callable[[JobContext], HandlerResult]] | None = None,
    contained: bool = False,
    dispatch: Callable[[list[str]], None] | None = None,
) -> str:
    """Run one job to an end. Returns what happened: ``succeeded``, ``failed``, ``canceled``,
    ``released`` (shutdown), ``lost`` (lease lost) or ``skipped`` (not claimable).

    ``dispatch(job_ids)`` is given the jobs that were waiting for this one's result and are queued now that
    it succeeded (the Celery worker sends them; the local executor's poller finds queued jobs itself).

    ``contained``: this process runs this one job and ends with it (the executors' job processes), so the
    job's memory limit is set on the whole process, for good. Either way an allocation that fails ends the
    job failed with the limit in its error."""
    from worker.handlers import get_handler

    worker_id = worker_id or new_worker_id()
    job = jobstore.claim_job(db, job_id=job_id, worker_id=worker_id, lease_seconds=settings.job_lease_seconds)
    if job is None:
        log.info("job %s: not claimable (already taken, finished or canceled)", job_id)
        return "skipped"
    log.info(
        "job %s (%s, attempt %d/%d): started by %s",
        job.id,
        job.kind,
        job.attempt,
        job.max_attempts,
        worker_id,
    )
    memory = settings.job_memory_limit((job.estimate or {}).get("memory_bytes"))
    if contained:
        memory_limit.apply(memory)
    lease = _Lease(db, job.id, worker_id, settings, settings.job_time_limit(job.kind))
    lease.start()
    job_files.remove_scratch(settings, job.id)  # left by an attempt that was killed
    scratch = settings.scratch_dir / f"{job.id}-{secrets.token_hex(4)}"
    scratch.mkdir(parents=True, exist_ok=True)
    settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    store = ArtifactStore(settings.artifacts_dir)
    ctx = JobContext(
        job_id=job.id,
        kind=job.kind,
        owner=job.owner,
        resource_id=job.resource_id,
        params=dict(job.params),
        attempt=job.attempt,
        settings=settings,
        db=db,
        store=store,
        scratch=scratch,
        checkpoint_path=job_files.checkpoint_path(settings, job.id),
        progress=_ProgressReporter(db, job.id, worker_id, settings, lease, stop_event),
    )
    outcome = "lost"  # until known: if even ending the job fails (database down), its files are kept

    def end(state: str, error: str) -> str:
        ended = retry_while_unavailable(
            lambda: jobstore.end_job(db, job_id=job.id, worker_id=worker_id, state=state, error=error),
            what=f"job {job.id}: ending {state}",
        )
        return state if ended else "lost"

    try:
        handler = (handlers or {}).get(job.kind) or get_handler(job.kind)
        faults.pause("handler", job_id=job.id, data_dir=settings.data_dir)
        result = handler(ctx)
        if time.monotonic() >= lease.deadline:  # it finished, but too late: the limit holds either way
            raise JobTimeLimit(lease.time_limit)
        outcome, queued = _record(ctx, worker_id, result)
        if queued and dispatch is not None:
            dispatch(queued)
    except JobCanceled:
        outcome = end(jobstore.CANCELED, jobstore.CANCELED_BY_USER)
    except JobInterrupted:
        released = retry_while_unavailable(
            lambda: jobstore.release_job(db, job_id=job.id, worker_id=worker_id),
            what=f"job {job.id}: releasing",
        )
        outcome = "released" if released else "lost"
    except LeaseLost:
        outcome = "lost"
    except JobTimeLimit as exc:
        log.warning("job %s: %s", job.id, exc)
        outcome = end(jobstore.FAILED, str(exc))
    except (ValueError, JobError) as exc:
        log.info("job %s failed: %s", job.id, _one_line(exc))
        outcome = end(jobstore.FAILED, _one_line(exc))
    except Exception as exc:
        if memory_limit.is_out_of_memory(exc):
            # The frames hold what filled the memory; free it before ending the job needs some.
            traceback.clear_frames(exc.__traceback__)
            log.warning("job %s: %s (%s)", job.id, memory_limit.error(memory), _one_line(exc))
            outcome = end(jobstore.FAILED, memory_limit.error(memory))
        else:
            log.exception("job %s crashed", job.id)
            outcome = end(jobstore.FAILED, f"internal error: {type(exc).__name__}: {_one_line(exc)}")
    finally:
        lease.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        if outcome in ("succeeded", "failed", "canceled"):
            job_files.clean_up_ended_job(settings, db, job.id)
    log.info("job %s: %s", job.id, outcome)
    return outcome


def _record(ctx: JobContext, worker_id: str, result: HandlerResult) -> tuple[str, list[str]]:
    """Store the files, then commit artifacts + resource + job state together, if we still hold the job.
    The commit is retried through a database outage (it is a compare-and-set on the job we hold). Returns
    the outcome and the jobs that waited for this result and are queued now."""
    pause_at = functools.partial(faults.pause, job_id=ctx.job_id, data_dir=ctx.settings.data_dir)
    pause_at("before_artifacts")
    ledger = job_files.blob_ledger(ctx.settings, ctx.job_id)
    blobs = [(new_id("artifact"), f, ledger.put_file(f.path)) for f in result.files]
    pause_at("mid_artifacts")
    fields = dict(result.fields)
    publisher = result.publisher
    if publisher is not None:
        fields.update(publisher.publish([_artifact_read(ctx, *planned) for planned in blobs]))
    outcome, queued = "lost", []
    try:
        outcome, queued = retry_while_unavailable(
            lambda: _commit(ctx, worker_id, fields, blobs, pause_at),
            what=f"job {ctx.job_id}: recording results",
        )
    finally:
        if publisher is not None and outcome != "succeeded":
            publisher.retract()
    return outcome, queued


def _artifact(ctx: JobContext, artifact_id: str, out: OutputFile, blob: StoredBlob) -> Artifact:
    return Artifact(
        id=artifact_id,
        owner=ctx.owner,
        resource_id=ctx.resource_id,
        kind=out.kind,
        sha256=blob.sha256,
        size=blob.size,
        content_type=out.content_type,
        filename=out.filename,
    )


def _artifact_read(ctx: JobContext, artifact_id: str, out: OutputFile, blob: StoredBlob) -> ArtifactRead:
    """The artifact as the API will show it once recorded (for a publisher, before the commit)."""
    row = _artifact(ctx, artifact_id, out, blob)
    row.created_at = utcnow()
    return artifact_read(row)


def _commit(
    ctx: JobContext, worker_id: str, fields: dict[str, Any], blobs: list, pause_at
) -> tuple[str, list[str]]:
    """(the outcome, the jobs that waited for this result and are queued now)."""
    with ctx.db.write_session() as session:
        job = jobstore.lock_own_job(session, job_id=ctx.job_id, worker_id=worker_id)
        if job is None:
            return "lost", []
        if job.state == jobstore.CANCELING:
            jobstore.finish(session, job, jobstore.CANCELED, error=jobstore.CANCELED_BY_USER)
            return "canceled", []
        for planned in blobs:
            session.add(_artifact(ctx, *planned))
        values = {k: jsonable(v) if isinstance(v, dict | list) else v for k, v in fields.items()}
        queued = jobstore.finish(session, job, jobstore.SUCCEEDED, **values)
        pause_at("after_artifacts")
    return "succeeded", queued
