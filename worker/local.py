"""The local executor: embedded mode's job transport, no broker needed.

A poller thread inside the ``sbaudit serve`` process looks for queued jobs (woken at once by the API's
dispatch when a slot is free, or by a job process ending, otherwise every ``poll_interval_seconds``) and
runs each in its own subprocess, at most
``SBAUDIT_WORKERS`` at a time. A subprocess keeps torch and CUDA out of the server, and a crash in one job
(out of memory, a segfault) cannot take the API down: the poller sees the dead process, expires its lease,
and the reaper re-queues the job (attempt + 1) to resume from its last checkpoint.

Job processes are forked from a *fork server*: a fresh interpreter the executor starts once, which imports
what every job imports (worker/job_preload.py: torch, the optimizer machinery, sbengine, matplotlib, the
handlers) and nothing else (it never touches CUDA, so each job initialises its own). A job then starts in
milliseconds with all of it loaded; importing what it needed took each job 1-2 s of CPU on a 2-core
machine (the README's three jobs 4-6 s together), which also took that CPU from the API. When a job
process ends, the executor tells the API (``on_job_end``), which answers the requests waiting for that job
at once (service/job_ends.py).

A job past its time limit stops at its next progress point (worker/runner.py); one stuck without progress
points is killed SIGKILL at limit + SBAUDIT_JOB_TIME_LIMIT_GRACE_SECONDS and the reaper fails it. A canceled
job that reaches no progress point within SBAUDIT_CANCEL_GRACE_SECONDS is killed too, and ends canceled
(worker/cancel_watch.py). Each job process has a hard memory limit (worker/memory_limit.py).

On shutdown running jobs get SIGTERM; they stop at their next progress point and go back to the queue
without spending an attempt, so the next ``sbaudit serve`` resumes them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import multiprocessing.spawn as spawn
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from service import jobstore
from service.db import Database
from service.settings import Settings
from worker.cancel_watch import CancelWatch
from worker.job_files import clean_up_ended_job
from worker.runner import new_worker_id

log = logging.getLogger("sbaudit.executor")

SHUTDOWN_GRACE_SECONDS = 20.0

# Jobs run below the API's CPU priority: on a small machine a busy job should slow itself, not the requests.
JOB_NICENESS = 10

# What the fork server imports once, so that a job process starts with what every job imports (torch, the
# optimizer machinery, sbengine, matplotlib, the handlers) already loaded: worker/job_preload.py. With
# SBAUDIT_PRELOAD_JOB_MODULES=false only the runner, and each job imports the rest itself.
JOB_PROCESS_PRELOAD = ("worker.job_preload",)
COLD_PRELOAD = ("worker.runner",)
# multiprocessing runs the parent's main script again in every child, so that functions defined there can be
# unpickled (``sbaudit``'s imports the client: 0.15 s per job on a 2-core machine); CPython's fork server
# never receives the path it would preload it from. Job processes need nothing from it, so the fork server
# is told the path in this variable and adopts it as its own __main__'s (worker/job_preload.py): its
# children then find the script "already run" and skip it.
FORK_SERVER_MAIN_ENV = "_SBAUDIT_FORK_SERVER_MAIN_PATH"


@dataclass
class _Running:
    process: BaseProcess
    worker_id: str
    killed_for_cancel: bool = False


def _job_process(job_id: str, worker_id: str, settings_values: dict) -> None:
    """Entry point of a job subprocess (forked from the fork server: torch already imported, no CUDA)."""
    from worker.logs import configure_logging
    from worker.runner import run_job

    settings = Settings(**settings_values)
    os.nice(JOB_NICENESS)
    configure_logging(settings.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server decides
    db = Database.connect(settings.database_url, pooled=False)
    try:
        run_job(job_id, settings=settings, db=db, worker_id=worker_id, stop_event=stop, contained=True)
    finally:
        db.dispose()


class LocalExecutor:
    def __init__(
        self, settings: Settings, db: Database, on_job_end: Callable[[str], None] | None = None
    ) -> None:
        """``on_job_end(job_id)`` is called from the poller's thread once a job's process has ended (it
        recorded the result, if any, before): the API wakes the requests waiting for it
        (service/job_ends.py)."""
        self.settings = settings
        self.db = db
        self._on_job_end = on_job_end
        self._mp = multiprocessing.get_context("forkserver")
        self._mp.set_forkserver_preload(
            list(JOB_PROCESS_PRELOAD if settings.preload_job_modules else COLD_PRELOAD)
        )
        # Wake-ups for the poller: a byte in this pipe (a dispatch, a stop), or a job process ending (its
        # sentinel), whichever comes first; otherwise it looks again every poll_interval_seconds.
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_reader, False)
        os.set_blocking(self._wake_writer, False)
        self._stopping = threading.Event()
        self._running: dict[str, _Running] = {}
        self._thread: threading.Thread | None = None
        self._last_reap = 0.0
        self._cancel_watch = CancelWatch(settings, db)

    # --- Executor protocol ---

    def start(self) -> None:
        self._start_fork_server()
        self._thread = threading.Thread(target=self._loop, name="sbaudit-local-executor", daemon=True)
        self._thread.start()
        log.info(
            "local executor started (%d worker%s)",
            self.settings.workers,
            "" if self.settings.workers == 1 else "s",
        )

    def dispatch(self, job_id: str) -> None:
        # With every slot taken the poller looks for queued jobs as soon as one ends, so waking it would
        # only cost the API (under a burst of POSTs, a thread switch per request).
        if len(self._running) < self.settings.workers:
            self._wake()

    def _wake(self) -> None:
        if self._wake_writer is None:  # stopped
            return
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_writer, b"\0")

    def ready(self) -> str | None:
        if self._thread is None or not self._thread.is_alive():
            return "the local executor is not running"
        return None

    def drain(self) -> None:
        """Start no more jobs (the poller ends); :meth:`stop` then stops the running ones."""
        self._stopping.set()
        self._wake()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._wake_writer is not None and (self._thread is None or not self._thread.is_alive()):
            for fd in (self._wake_reader, self._wake_writer):
                os.close(fd)
            self._wake_reader = self._wake_writer = None
        for running in self._running.values():
            if running.process.is_alive():
                running.process.terminate()  # SIGTERM: release the job at its next progress point
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for job_id, running in list(self._running.items()):
            running.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if running.process.is_alive():
                log.warning("job %s did not stop in time; killing it (its lease will expire)", job_id)
                running.process.kill()
                running.process.join(timeout=5)
        self._running.clear()

    def _start_fork_server(self) -> None:
        """Start the fork server now, ignoring SIGTERM. `docker stop`, systemd and ``kill`` on a process group
        signal every process in it; a fork server killed that way can no longer report how its children
        ended, so the executor would take running jobs for dead while they were still handing themselves
        back. The server's own shutdown stops the jobs, and the fork server exits with the server. An ignored
        signal stays ignored across exec, so the disposition is swapped around the start; that needs the
        main thread (elsewhere, as under a test client, the fork server starts on first use)."""
        if threading.current_thread() is not threading.main_thread():
            return
        main_path = spawn.get_preparation_data("main").get("init_main_from_path")
        if main_path and self.settings.preload_job_modules:
            os.environ[FORK_SERVER_MAIN_ENV] = main_path  # the fork server inherits it at its start
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGTERM, previous)
            os.environ.pop(FORK_SERVER_MAIN_ENV, None)

    # --- the poller ---

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("local executor: poll failed; retrying")
            ending = [running.process.sentinel for running in self._running.values()]
            multiprocessing.connection.wait([self._wake_reader, *ending], self.settings.poll_interval_seconds)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_reader, 4096)

    def _tick(self) -> None:
        self._collect_finished()
        self._kill_canceled()
        now = time.monotonic()
        if now - self._last_reap >= self.settings.reaper_interval_seconds:
            self._last_reap = now
            self._kill_overdue()
            requeued = jobstore.reap_expired(
                self.db,
                time_limit=self.settings.job_time_limit,
                on_ended=functools.partial(clean_up_ended_job, self.settings, self.db),
            )
            if requeued:
                log.warning("re-queued jobs whose worker stopped responding: %s", ", ".join(requeued))
            unblocked = jobstore.settle_all_waiting(self.db)  # queued: this poll starts them
            if unblocked:
                log.warning("queued jobs whose inputs became ready unseen: %s", ", ".join(unblocked))
        free = self.settings.workers - len(self._running)
        if free <= 0 or self._stopping.is_set():
            return
        for job_id in jobstore.queued_job_ids(self.db, exclude=self._running, limit=free):
            self._spawn(job_id)

    def _spawn(self, job_id: str) -> None:
        worker_id = new_worker_id("local")
        process = self._mp.Process(
            target=_job_process,
            args=(job_id, worker_id, self.settings.model_dump()),
            name=f"sbaudit-job-{job_id}",
            daemon=False,
        )
        process.start()
        self._running[job_id] = _Running(process, worker_id)

    def _kill_overdue(self) -> None:
        """A job past its time limit + grace never reached a progress point to stop at: kill its process.
        The next tick sees it dead and expires its lease; the reaper then fails it with the reason."""
        overdue = jobstore.overdue_job_ids(
            self.db,
            self._running,
            time_limit=self.settings.job_time_limit,
            grace=self.settings.job_time_limit_grace_seconds,
        )
        for job_id in overdue:
            running = self._running[job_id]
            if running.process.is_alive():
                log.error("job %s is stuck past its time limit; killing its process", job_id)
                running.process.kill()

    def _kill_canceled(self) -> None:
        """A canceled job past its cancel grace reached no progress point: kill its process. The next tick
        sees it dead and ends the job canceled (:meth:`_collect_finished`)."""
        for job_id in self._cancel_watch.overdue(self._running):
            running = self._running[job_id]
            if running.process.is_alive() and not running.killed_for_cancel:
                log.warning(
                    "job %s: canceled, no progress point within the grace; killing its process", job_id
                )
                running.process.kill()
                running.killed_for_cancel = True

    def _collect_finished(self) -> None:
        for job_id, running in list(self._running.items()):
            if running.process.is_alive():
                continue
            running.process.join()
            del self._running[job_id]
            self._job_ended(job_id, running)

    def _job_ended(self, job_id: str, running: _Running) -> None:
        if running.killed_for_cancel:
            self._cancel_watch.end_killed(job_id, running.worker_id)
        elif running.process.exitcode != 0:
            log.error("job process for %s died (exit code %s)", job_id, running.process.exitcode)
            jobstore.expire_lease(self.db, job_id=job_id, worker_id=running.worker_id)
            self._last_reap = 0.0  # reap on this tick rather than in reaper_interval_seconds
        if self._on_job_end is not None:
            try:
                self._on_job_end(job_id)
            except Exception:
                log.exception("telling the API that job %s ended failed", job_id)
