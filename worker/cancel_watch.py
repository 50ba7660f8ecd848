"""Prompt cancel: a canceled job that reaches no progress point within the grace is killed.

A running job asked to cancel stops at its next progress point (worker/runner.py). One stuck in a long
call reaches none, so the process that started it (the local executor, or a Celery worker's main process
for its pool child) watches its running jobs: once one has been ``canceling`` for
SBAUDIT_CANCEL_GRACE_SECONDS it kills the job's process and, with the process gone, ends the job
``canceled`` and removes its files, the scratch dir, checkpoint and unrecorded blobs (worker/job_files.py).
Killing from outside works whatever the job is doing, even holding the GIL in one C call, and cleaning up
only after the process is gone leaves nothing it could still write.

The grace is counted from when the watcher first sees the job ``canceling`` (it looks every
SBAUDIT_POLL_INTERVAL_SECONDS), so a stuck job ends at most grace + one poll interval after the request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from service import jobstore
from service.db import Database
from service.settings import Settings
from worker.job_files import clean_up_ended_job


class CancelWatch:
    """Which running jobs are past their cancel grace, and ending one once its process is gone."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self._seen: dict[str, float] = {}  # job id -> when first seen canceling (monotonic)

    def overdue(self, running_job_ids: Iterable[str]) -> dict[str, str]:
        """Of the jobs this executor's processes run, those canceling for longer than the grace, each with
        the worker id that holds it."""
        canceling = jobstore.canceling_job_workers(self.db, running_job_ids)
        now = time.monotonic()
        self._seen = {job_id: self._seen.get(job_id, now) for job_id in canceling}
        grace = self.settings.cancel_grace_seconds
        return {job_id: canceling[job_id] for job_id, seen in self._seen.items() if now - seen >= grace}

    def end_killed(self, job_id: str, worker_id: str) -> None:
        """The job's process was killed and is gone: end the job canceled and remove its files. The job may
        have ended itself just before (it reached a progress point); its files are removed all the same."""
        jobstore.end_job(
            self.db,
            job_id=job_id,
            worker_id=worker_id,
            state=jobstore.CANCELED,
            error=jobstore.CANCELED_BY_USER,
        )
        self._seen.pop(job_id, None)
        clean_up_ended_job(self.settings, self.db, job_id)
