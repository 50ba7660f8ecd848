"""Celery executor (scaled mode, SBAUDIT_BROKER_URL set): the broker only carries job ids.

``sbaudit worker`` runs a Celery worker with prefetch 1, late acks and concurrency 1 (one job at a time
per worker: run one worker per GPU). Each job runs in a fresh pool child (``max_tasks_per_child=1``)
forked from the worker's main process, which has imported what every job imports before its pool starts
(:func:`preload_job_modules`, worker/job_preload.py) but never initialises CUDA: the job starts with torch
and the engine loaded, CUDA is initialised inside the job only, and all the job's memory is returned when
it ends.

The database stays the source of truth: the task claims the job by compare-and-set, so a duplicate or
late redelivery is a no-op, and we never rely on the broker's visibility timeout to recover a dead
worker. Instead every worker runs the reaper on a timer in its main process: it re-queues jobs whose lease
expired (attempt + 1) and sends them again, and re-sends queued jobs whose message was lost: never sent
(the broker was down when the API sent it) or gone from the broker (Redis restarted without persistence).

The main process also watches the job its pool child runs: canceled and still running past
SBAUDIT_CANCEL_GRACE_SECONDS, the child is killed and the job ends canceled (worker/cancel_watch.py). The
child sets the job's memory limit on itself (worker/memory_limit.py): it runs that one job and exits.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import queue
import select
import signal
import threading
from datetime import datetime, timedelta

import billiard.process
from celery import Celery, bootsteps
from celery.signals import worker_shutting_down
from celery.worker import state as worker_state

from service import jobstore
from service.db import Database
from service.models import utcnow
from service.settings import Settings
from worker.cancel_watch import CancelWatch
from worker.job_files import clean_up_ended_job

log = logging.getLogger("sbaudit.celery")

TASK_NAME = "sbaudit.run_job"
JOB_PRELOAD_MODULE = "worker.job_preload"
QUEUE = "sbaudit"
# How long the main process waits for a pool child it killed to be gone before ending its job itself;
# past it (a child stuck in the kernel) the job's lease runs out and the reaper ends it canceled.
KILLED_CHILD_WAIT_SECONDS = 10.0
_state: dict = {}


def _db(settings: Settings) -> Database:
    """One engine per process (a forked pool child gets its own; NullPool keeps nothing to inherit)."""
    db = _state.get("db")
    if db is None or db.pid != os.getpid():
        db = _state["db"] = Database.connect(settings.database_url, pooled=False)
    return db


def preload_job_modules() -> None:
    """Import what every job imports into this process (a Celery worker's main process, before its pool
    starts), so that each pool child forked from it starts warm. Never in the API process: its Celery
    executor only sends job ids. Imported by name, as the handlers are, so that importing this module
    imports no torch."""
    importlib.import_module(JOB_PRELOAD_MODULE)


def hard_time_limit(settings: Settings) -> int:
    """Seconds after which Celery kills a job's pool child: the longest job time limit plus the grace."""
    longest = max([settings.job_time_limit_seconds, *settings.job_time_limits.values()])
    return int(longest + settings.job_time_limit_grace_seconds + 2 * settings.job_lease_seconds) + 1


def make_celery(settings: Settings) -> Celery:
    app = Celery("sbaudit", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_ignore_result=True,
        task_track_started=False,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=1,
        # Backstop for a job stuck past its time limit without progress points: the pool child is killed
        # (the runner's soft stop and the reaper, which fails the job, act per kind and earlier).
        task_time_limit=hard_time_limit(settings),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        # Long jobs stay unacked for hours; a redelivery is harmless (the claim fails) but pointless.
        broker_transport_options={"visibility_timeout": 7 * 24 * 3600},
    )

    @app.task(name=TASK_NAME, ignore_result=True)
    def run_job_task(job_id: str) -> str:
        from worker.runner import new_worker_id, run_job

        # SIGTERM (sent by the parent when the worker shuts down) puts the job back in the queue at its
        # next progress point instead of killing it mid-way.
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            db = _db(settings)
            outcome = run_job(
                job_id,
                settings=settings,
                db=db,
                worker_id=new_worker_id("celery"),
                stop_event=stop,
                contained=True,  # max_tasks_per_child=1: the pool child exits after this job
                dispatch=functools.partial(send, app, db),  # the jobs that waited for this one's result
            )
            if outcome == "released":
                send(app, db, [job_id])  # this message was consumed; queue the job for another worker
            return outcome
        finally:
            signal.signal(signal.SIGTERM, previous)

    class Reaper(bootsteps.StartStopStep):
        """Runs in the worker's main process, on the event loop's timer (no extra thread to fork under)."""

        requires = {"celery.worker.components:Timer"}

        def __init__(self, worker, **kwargs):
            super().__init__(worker, **kwargs)
            self.tref = None

        def start(self, worker):
            self.tref = worker.timer.call_repeatedly(
                settings.reaper_interval_seconds, self.tick, (), priority=10
            )

        def stop(self, worker):
            if self.tref is not None:
                self.tref.cancel()

        def tick(self):
            try:
                reap_and_redispatch(app, settings)
            except Exception:
                log.exception("reaper pass failed; retrying")
                return
            if settings.worker_health_file is not None:
                settings.worker_health_file.touch()

    class CancelKiller(bootsteps.StartStopStep):
        """Kills the pool child of a canceled job that reaches no progress point within the grace."""

        requires = {"celery.worker.components:Timer", "celery.worker.components:Pool"}

        def __init__(self, worker, **kwargs):
            super().__init__(worker, **kwargs)
            self.tref = None

        def start(self, worker):
            watch = CancelWatch(settings, _db(settings))
            self.tref = worker.timer.call_repeatedly(
                settings.poll_interval_seconds, self.tick, (worker.pool, watch), priority=10
            )

        def stop(self, worker):
            if self.tref is not None:
                self.tref.cancel()

        def tick(self, pool, watch: CancelWatch):
            try:
                kill_canceled(pool, watch)
            except Exception:
                log.exception("looking for canceled jobs failed; retrying")

    app.steps["worker"].add(Reaper)
    app.steps["worker"].add(CancelKiller)
    return app


def kill_canceled(pool, watch: CancelWatch) -> list[str]:
    """Kill the pool children running canceled jobs past the grace; once each is gone, end its job canceled
    and remove the job's files. Returns the job ids."""
    running = {
        request.args[0]: request
        for request in list(worker_state.active_requests)
        if request.name == TASK_NAME and request.worker_pid and request.args
    }
    killed = []
    for job_id, worker_id in watch.overdue(running).items():
        request = running[job_id]
        log.warning("job %s: canceled, no progress point within the grace; killing its process", job_id)
        try:
            child = os.pidfd_open(request.worker_pid)  # this very process, even once its pid is reused
        except ProcessLookupError:
            child = None
        try:
            request.terminate(pool, signal="SIGKILL")
            gone = child is None or select.select([child], [], [], KILLED_CHILD_WAIT_SECONDS)[0]
        finally:
            if child is not None:
                os.close(child)
        if gone:
            watch.end_killed(job_id, worker_id)
            killed.append(job_id)
        else:
            log.error("job %s: its killed process is still there; the reaper will end the job", job_id)
    return killed


@worker_shutting_down.connect
def _release_running_jobs(**_kwargs) -> None:
    """Warm shutdown waits for the running task; ask it to release its job so the wait is short and the
    job resumes on another worker without spending an attempt."""
    for child in billiard.process.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)


def send(app: Celery, db: Database, job_ids: list[str]) -> None:
    for job_id in job_ids:
        app.send_task(TASK_NAME, args=[job_id], queue=QUEUE)
    jobstore.mark_dispatched(db, job_ids)


def broker_backlog(app: Celery) -> int:
    """Messages waiting in the job queue (not counting those a worker has taken)."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        return app.amqp.queues[QUEUE](conn.default_channel).queue_declare().message_count


def lost_messages(app: Celery, db: Database, *, before: datetime) -> list[str]:
    """Queued jobs whose message may be gone from the broker. When the queue holds fewer messages than there
    are queued jobs recorded as sent, that many were lost (a Redis restart, or a delivery whose claim
    failed). We cannot tell which, so that many of the jobs last sent before ``before`` are sent again,
    longest waiting first. A wrong guess only costs a duplicate (a failed claim); the next pass counts
    again. Each job is re-sent at most once per ``redispatch_after_seconds``."""
    sent, stale = jobstore.dispatched_queued_counts(db, before=before)
    if not stale:
        return []
    missing = sent - broker_backlog(app)
    return stale[: max(0, missing)]


def reap_and_redispatch(app: Celery, settings: Settings) -> list[str]:
    db = _db(settings)
    requeued = jobstore.reap_expired(
        db, time_limit=settings.job_time_limit, on_ended=functools.partial(clean_up_ended_job, settings, db)
    )
    if requeued:
        log.warning("re-queued jobs whose worker stopped responding: %s", ", ".join(requeued))
    unblocked = jobstore.settle_all_waiting(db)
    if unblocked:
        log.warning("queued jobs whose inputs became ready unseen: %s", ", ".join(unblocked))
    before = utcnow() - timedelta(seconds=settings.redispatch_after_seconds)
    never_sent = jobstore.undispatched_job_ids(db, before=before)
    lost = lost_messages(app, db, before=before)
    if never_sent or lost:
        log.warning("sending again queued jobs whose message was lost: %s", ", ".join(never_sent + lost))
    todo = list(dict.fromkeys(requeued + unblocked + never_sent + lost))
    send(app, db, todo)
    return todo


class CeleryExecutor:
    """The API side: job ids committed by requests are sent to the broker by one thread of this process.

    A request only puts the id in a queue and answers; the sender takes whatever ids have piled up, sends
    one message each and marks them sent in one transaction. Sending from the request instead (a broker
    round trip and a database one per POST, each in a thread of its own) had cost more CPU than the rest of
    the request, most of it in threads contending for the interpreter (BENCHMARKS.md). An id that never
    leaves the queue (the process dies first, or the broker is down) is a job still ``queued`` and never
    sent: the workers' reaper sends it after SBAUDIT_REDISPATCH_AFTER_SECONDS."""

    _BATCH = 100

    def __init__(self, settings: Settings, db: Database) -> None:
        self.db = db
        self.app = make_celery(settings)
        self._pending: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None

    def start(self) -> None:
        self._sender = threading.Thread(target=self._send_pending, name="sbaudit-celery-sender", daemon=True)
        self._sender.start()

    def stop(self) -> None:
        """Send what is queued (for up to the join timeout), then end the sender."""
        if self._sender is not None:
            self._pending.put(None)
            self._sender.join(timeout=10)
            self._sender = None

    def drain(self) -> None:
        pass  # jobs run in `sbaudit worker` processes, which stop on their own signal

    def ready(self) -> str | None:
        if self._sender is not None and not self._sender.is_alive():
            return "the thread that sends jobs to the broker has stopped"
        return None

    def dispatch(self, job_id: str) -> None:
        self._pending.put(job_id)

    def _send_pending(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < self._BATCH and not self._pending.empty():
                batch.append(self._pending.get())
            job_ids = [job_id for job_id in batch if job_id is not None]
            if job_ids:
                try:
                    send(self.app, self.db, job_ids)
                except Exception:  # committed as queued: the reaper sends them later
                    log.exception(
                        "sending jobs %s to the broker failed; they stay queued", ", ".join(job_ids)
                    )
            if None in batch:
                return
