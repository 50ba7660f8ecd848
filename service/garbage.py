"""Garbage collection of the data dir (``sbaudit gc``): what no database row needs any more.

- **blobs** in the artifact store that no artifact row references (left by a deletion that found the blob
  too fresh to remove, or by a job that stored its files and then lost its lease or crashed), and
  ``.tmp-*`` files of interrupted writes;
- **scratch** directories and **checkpoints** of jobs that are finished (succeeded, failed, canceled) or
  no longer exist (a queued job keeps its checkpoint: it resumes from it);
- **upload** directories that no request is using any more;
- expired **idempotency records** (older than SBAUDIT_IDEMPOTENCY_TTL_HOURS).

Safe while the server and workers run. A job stores its files first and commits their artifact rows after,
refreshing the mtime of a blob that already exists (service/storage.py). So a blob is removed only when
no row references it *and* it was not written or refreshed in the last ``grace_seconds``, and the
reference is checked again right before the unlink, as DELETE does (service/deletion.py). Files of a
running job are never touched; upload directories and temp files only when nothing in them changed for
``grace_seconds``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, delete, exists, func, select

from service.db import Database
from service.jobstore import TERMINAL_STATES
from service.models import Artifact, IdempotencyRecord, Job, utcnow
from service.settings import Settings
from service.storage import ArtifactStore

log = logging.getLogger("sbaudit.gc")

DEFAULT_GRACE_SECONDS = 3600.0
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Removal:
    what: str  # blob, temp file, scratch, checkpoint, upload
    path: Path
    size: int


@dataclass
class Report:
    removed: list[Removal] = field(default_factory=list)
    idempotency_records: int = 0

    @property
    def bytes_freed(self) -> int:
        return sum(r.size for r in self.removed)


def _size(path: Path) -> int:
    """Bytes in a file, or in all files under a directory (what removing it frees)."""
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except FileNotFoundError:
                continue
    return total


def _newest_mtime(path: Path) -> float:
    """When anything in ``path`` last changed (an upload in progress keeps writing its file)."""
    newest = path.stat().st_mtime
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, (Path(root) / name).stat().st_mtime)
                except FileNotFoundError:
                    continue
    return newest


def _entries(directory: Path) -> Iterator[Path]:
    try:
        yield from sorted(directory.iterdir())
    except FileNotFoundError:
        return


class Collector:
    def __init__(self, settings: Settings, db: Database, *, grace_seconds: float, dry_run: bool) -> None:
        self.settings, self.db = settings, db
        self.grace, self.dry_run = grace_seconds, dry_run
        self.store = ArtifactStore(settings.artifacts_dir)
        self.cutoff = time.time() - grace_seconds
        self.report = Report()

    def run(self) -> Report:
        self.collect_blobs()
        self.collect_job_files()
        self.collect_uploads()
        self.collect_idempotency_records()
        return self.report

    def _remove(self, what: str, path: Path) -> None:
        try:
            size = _size(path)
            if not self.dry_run:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        except FileNotFoundError:
            return  # someone else removed it first
        self.report.removed.append(Removal(what, path, size))
        if not self.dry_run:
            log.info("gc: removed %s %s (%d bytes)", what, path, size)

    # --- the artifact store ---

    def collect_blobs(self) -> None:
        with self.db.read_session() as session:
            referenced = set(session.scalars(select(Artifact.sha256).distinct()))
        for shard in _entries(self.store.root):
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for path in _entries(shard):
                name = path.name
                if name.startswith(".tmp-"):
                    self._remove_if_old("temp file", path)
                elif len(name) == 64 and set(name) <= _HEX and name not in referenced:
                    self._remove_orphan_blob(path)

    def _remove_if_old(self, what: str, path: Path) -> None:
        try:
            if _newest_mtime(path) >= self.cutoff:
                return
        except FileNotFoundError:
            return
        self._remove(what, path)

    def _remove_orphan_blob(self, path: Path) -> None:
        """Same order as service.deletion.collect_blob: the reference, then the age, then the unlink."""
        with self.db.read_session() as session:
            if session.scalar(select(exists().where(Artifact.sha256 == path.name))):
                return  # committed since the snapshot
        self._remove_if_old("blob", path)

    # --- scratch directories and checkpoints of jobs ---

    def _finished_or_gone(self, job_ids: set[str]) -> set[str]:
        if not job_ids:
            return set()
        with self.db.read_session() as session:
            states = dict(session.execute(select(Job.id, Job.state).where(Job.id.in_(job_ids))).all())
        return {j for j in job_ids if states.get(j) is None or states[j] in TERMINAL_STATES}

    def collect_job_files(self) -> None:
        # scratch/<job id>-<random>: one per attempt; checkpoints/<job id>.pt (and .pt.tmp while written)
        scratch = {p: p.name.rpartition("-")[0] for p in _entries(self.settings.scratch_dir)}
        checkpoints = {p: p.name.partition(".")[0] for p in _entries(self.settings.checkpoints_dir)}
        done = self._finished_or_gone({j for j in (*scratch.values(), *checkpoints.values()) if j})
        for path, job_id in scratch.items():
            if job_id in done:
                self._remove("scratch", path)
        for path, job_id in checkpoints.items():
            if job_id in done:
                self._remove("checkpoint", path)

    # --- uploads a crashed or killed request left behind ---

    def collect_uploads(self) -> None:
        for path in _entries(self.settings.uploads_dir):
            self._remove_if_old("upload", path)

    # --- idempotency records ---

    def collect_idempotency_records(self) -> None:
        ttl = timedelta(hours=self.settings.idempotency_ttl_hours)
        expired = IdempotencyRecord.created_at < utcnow() - ttl
        with self.db.write_session() as session:
            if self.dry_run:
                count = session.scalar(select(func.count()).select_from(IdempotencyRecord).where(expired))
            else:
                deleted = session.execute(delete(IdempotencyRecord).where(expired))
                count = cast("CursorResult[Any]", deleted).rowcount
        self.report.idempotency_records = int(count or 0)


def collect_garbage(
    settings: Settings, db: Database, *, grace_seconds: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False
) -> Report:
    return Collector(settings, db, grace_seconds=grace_seconds, dry_run=dry_run).run()
