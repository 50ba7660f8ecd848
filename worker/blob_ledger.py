"""The blobs a job's attempts added to the artifact store, so a crashed attempt leaves none behind.

The runner stores a job's output files, then commits their artifact rows. An attempt killed in between
leaves blobs that no row references; the re-queued attempt usually produces the same bytes (the store
dedups them) but not always, e.g. a training resumed from an earlier checkpoint. So before storing a file
the runner notes its hash here (``<checkpoints dir>/<job id>.blobs``, next to the job's checkpoint, keyed by
job, not attempt) and after storing it the blob's mtime. When the job ends, whichever attempt ends it
removes every noted blob that no artifact row references, and then the ledger.

Only blobs this job *created* are candidates (content that was already in the store belongs to others),
and only while their mtime is still the one noted: a job storing identical content refreshes the mtime
before committing its row, and so keeps the blob. A blob whose storing was cut short before its mtime was
noted is left to ``service.deletion.collect_blob``'s grace-period rule.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import exists, select

from service.db import Database
from service.models import Artifact
from service.storage import ArtifactStore, StoredBlob, file_sha256

log = logging.getLogger("sbaudit.worker")


class BlobLedger:
    def __init__(self, path: Path, store: ArtifactStore) -> None:
        self.path, self.store = Path(path), store

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def put_file(self, src: Path) -> StoredBlob:
        """Store ``src`` (consumed) in the artifact store, noting the blob if it is new."""
        sha, _ = file_sha256(src)
        created = not self.store.exists(sha)
        if created:
            self._append(f"{sha} storing")
        blob = self.store.put_file(src, move=True)
        if created:
            self._append(f"{sha} {self.store.path_for(sha).stat().st_mtime_ns}")
        return blob

    def _noted(self) -> dict[str, int | None]:
        """sha256 -> the mtime noted after storing it (None: storing was cut short)."""
        noted: dict[str, int | None] = {}
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return noted
        for line in lines:
            sha, _, mark = line.partition(" ")
            if mark.isdigit():
                noted[sha] = int(mark)
            elif len(sha) == 64:
                noted.setdefault(sha, None)
        return noted

    def collect(self, db: Database) -> list[str]:
        """Remove the noted blobs nothing references, then the ledger. Returns the hashes removed."""
        removed = []
        for sha, mtime_ns in self._noted().items():
            if mtime_ns is None:
                continue
            with db.read_session() as session:
                if session.scalar(select(exists().where(Artifact.sha256 == sha))):
                    continue
            path = self.store.path_for(sha)
            try:
                if path.stat().st_mtime_ns != mtime_ns:
                    continue  # stored again since, by a job about to reference it
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(sha)
        if removed:
            log.info("removed %d blob(s) an interrupted attempt stored but never recorded", len(removed))
        self.path.unlink(missing_ok=True)
        return removed
