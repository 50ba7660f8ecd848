"""Deleting a dataset, model or audit: its row, its artifact rows and the blobs no one else references.

A resource whose job is still waiting, queued or running cannot be deleted (cancel it first), nor one that
others are built on (a dataset with models or audits, a model with audits, waiting for it or not): deletion
never leaves a dangling input. Blobs are shared by content, so a blob is removed only when no artifact row
references it any more and it was not (re)stored in the last ``BLOB_GRACE_SECONDS``: a job storing
identical content at this moment refreshes the blob's mtime before committing its row, and so keeps it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import GenerativeSelect, delete, exists, select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import Problem
from service.models import Artifact, Audit, Dataset, Model
from service.storage import ArtifactStore
from service.views import audits_of_model

log = logging.getLogger("sbaudit.api")

BLOB_GRACE_SECONDS = 600.0


def _dependents(session: Session, kind: str, resource_id: str) -> list[str]:
    query: GenerativeSelect  # a SELECT or a UNION of two
    if kind == "dataset":
        query = (
            select(Model.id)
            .where(Model.dataset_id == resource_id)
            .union_all(select(Audit.id).where(Audit.dataset_id == resource_id))
        )
    elif kind == "model":
        query = select(Audit.id).where(audits_of_model(resource_id))
    else:
        return []
    return list(session.scalars(query.limit(11)))


def delete_resource(
    db: Database, store: ArtifactStore, row_loader: Callable[[Session], Dataset | Model | Audit], *, kind: str
) -> None:
    """``row_loader(session)`` returns the caller's (owner-checked) row inside the delete transaction."""
    with db.write_session() as session:
        row = row_loader(session)
        if row.status in ("waiting", "queued", "running"):
            raise Problem(
                409, f"{kind} {row.id} is {row.status}; cancel its job {row.job_id} first", slug="in-progress"
            )
        users = _dependents(session, kind, row.id)
        if users:
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            raise Problem(
                409, f"{kind} {row.id} is used by {users[0]}{more}; delete those first", slug="in-use"
            )
        shas = set(session.scalars(select(Artifact.sha256).where(Artifact.resource_id == row.id)))
        session.execute(delete(Artifact).where(Artifact.resource_id == row.id))
        session.delete(row)
    for sha in shas:
        collect_blob(db, store, sha)


def collect_blob(db: Database, store: ArtifactStore, sha256: str) -> bool:
    """Remove the blob if nothing references it and nothing stored it recently. True if removed."""
    with db.read_session() as session:
        if session.scalar(select(exists().where(Artifact.sha256 == sha256))):
            return False
    path = store.path_for(sha256)
    try:
        if time.time() - path.stat().st_mtime < BLOB_GRACE_SECONDS:
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    log.info("removed unreferenced blob %s", sha256)
    return True
