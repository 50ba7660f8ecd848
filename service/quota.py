"""Disk quota per owner (SBAUDIT_OWNER_QUOTA_BYTES; 0 = unlimited).

An owner's usage is the total size of the distinct blobs their artifacts reference: the store is
content-addressed, so the same bytes referenced twice (two artifacts, or a model uploaded twice) count once.
Uploaded models and datasets are artifacts too, so they count like generated ones.

The quota is checked before work is queued: a POST that would create a dataset, model or audit, and an
upload, answers ``507 Insufficient Storage`` (problem ``quota-exceeded``) while the owner is at or over it.
An upload is also cut off while streaming as soon as it would take usage past the quota. A running job may
still finish past the quota (its results are kept); the next request is refused until the owner deletes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import Problem
from service.jobstore import ACTIVE_STATES, QUEUED, WAITING
from service.models import Artifact, Audit, Dataset, Job, Model

QUOTA_SETTING = "SBAUDIT_OWNER_QUOTA_BYTES"


def bytes_used(session: Session, owner: str) -> int:
    distinct_blobs = (
        select(Artifact.sha256, func.max(Artifact.size).label("size"))
        .where(Artifact.owner == owner)
        .group_by(Artifact.sha256)
        .subquery()
    )
    return int(session.scalar(select(func.coalesce(func.sum(distinct_blobs.c.size), 0))) or 0)


def quota_exceeded(*, used: int, quota: int, adding: int = 0) -> Problem:
    if adding:
        detail = (
            f"this upload would take your storage to more than {used + adding} bytes, over your quota of "
            f"{quota} bytes ({used} bytes used; {QUOTA_SETTING}); delete datasets, models or audits first"
        )
    else:
        detail = (
            f"you use {used} bytes of your {quota}-byte storage quota ({QUOTA_SETTING}); delete datasets, "
            "models or audits before creating more"
        )
    return Problem(
        507,
        detail,
        slug="quota-exceeded",
        title="Insufficient Storage",
        usage_bytes=used,
        quota_bytes=quota,
    )


@dataclass(frozen=True)
class Room:
    """An owner's usage against their quota, as read when a request began."""

    used: int
    quota: int

    @property
    def left(self) -> int:
        return self.quota - self.used

    def check(self, adding: int) -> None:
        """507 when storing ``adding`` more bytes would take the owner past the quota."""
        if adding > self.left:
            raise quota_exceeded(used=self.used, quota=self.quota, adding=adding)


def room(session: Session, owner: str, quota: int) -> Room | None:
    """The owner's room under ``quota`` (None: unlimited). Raises the 507 when nothing is left."""
    if quota <= 0:
        return None
    used = bytes_used(session, owner)
    if used >= quota:
        raise quota_exceeded(used=used, quota=quota)
    return Room(used=used, quota=quota)


class UsageGate:
    """The quota check of every create request, without summing the owner's artifacts every time.

    An owner found well under the quota (below ``margin`` of it) is let through without a query for
    ``ttl`` seconds; one near or over it is checked exactly on every request, so deleting frees room at
    once. The cost is bounded slack: within ``ttl`` an owner far from the quota can only queue jobs, which may
    finish past it anyway. Uploads, which add bytes right away, always use the exact ``room``.
    """

    def __init__(self, ttl: float = 5.0, margin: float = 0.9, max_entries: int = 10_000) -> None:
        self.ttl, self.margin, self.max_entries = ttl, margin, max_entries
        self._clear_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, session: Session, owner: str, quota: int) -> None:
        """507 when the owner is at or over ``quota`` (0: unlimited)."""
        if quota <= 0 or self._clear_until.get(owner, 0.0) > time.monotonic():
            return
        current = room(session, owner, quota)
        assert current is not None  # quota > 0
        if current.used < self.margin * quota:
            with self._lock:
                if len(self._clear_until) >= self.max_entries:
                    self._clear_until.clear()
                self._clear_until[owner] = time.monotonic() + self.ttl


def room_for(db: Database, owner: str, quota: int) -> Room | None:
    with db.read_session() as session:
        return room(session, owner, quota)


def counts(session: Session, owner: str) -> dict[str, int]:
    out = {}
    for name, table in (("datasets", Dataset), ("models", Model), ("audits", Audit), ("artifacts", Artifact)):
        query = select(func.count()).select_from(table).where(table.owner == owner)
        out[name] = int(session.scalar(query) or 0)
    active = (
        select(func.count())
        .select_from(Job)
        .where(Job.owner == owner, Job.state.in_((WAITING, QUEUED, *ACTIVE_STATES)))
    )
    out["active_jobs"] = int(session.scalar(active) or 0)
    return out
