"""A job's files outside the artifact store, and their removal once the job has ended.

They are keyed by job id, not attempt, so a re-queued attempt finds them on the shared data dir: the
training checkpoint ``<checkpoints>/<job>.pt`` (and the ``.pt.tmp`` of a save cut short), the blob ledger
``<checkpoints>/<job>.blobs`` (worker/blob_ledger.py), and one scratch dir ``<scratch>/<job>-<random>`` per
attempt. The attempt that ends the job removes them; so does the reaper when it ends a job itself
(canceled while its worker was dead, or out of attempts), since no attempt is left to do it. A new
attempt removes the scratch dirs of killed ones.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from service.db import Database
from service.settings import Settings
from service.storage import ArtifactStore
from worker.blob_ledger import BlobLedger

log = logging.getLogger("sbaudit.worker")


def checkpoint_path(settings: Settings, job_id: str) -> Path:
    return settings.checkpoints_dir / f"{job_id}.pt"


def blob_ledger(settings: Settings, job_id: str) -> BlobLedger:
    return BlobLedger(settings.checkpoints_dir / f"{job_id}.blobs", ArtifactStore(settings.artifacts_dir))


def remove_scratch(settings: Settings, job_id: str) -> None:
    if settings.scratch_dir.is_dir():
        for directory in settings.scratch_dir.glob(f"{job_id}-*"):
            shutil.rmtree(directory, ignore_errors=True)


def clean_up_ended_job(settings: Settings, db: Database, job_id: str) -> None:
    """Remove the scratch dirs, the blobs an interrupted attempt stored but never recorded, and the
    checkpoint (with the ``.pt.tmp`` a process killed while saving it leaves). Never raises: a leftover is
    `sbaudit gc`'s to remove, not a reason to fail the job."""
    try:
        remove_scratch(settings, job_id)
        blob_ledger(settings, job_id).collect(db)
        for leftover in settings.checkpoints_dir.glob(f"{job_id}.*"):
            leftover.unlink(missing_ok=True)
    except Exception:
        log.warning("job %s: could not remove all of its files", job_id, exc_info=True)
