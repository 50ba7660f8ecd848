"""Caps on what one owner or one key may hold at once; reaching one answers 429 with ``Retry-After``.

- **Active jobs per owner** (SBAUDIT_MAX_ACTIVE_JOBS_PER_OWNER): waiting, queued, running and canceling
  jobs. A create request (datasets, models, audits) over the cap queues nothing. The count is taken in the
  transaction that would add the job, so the cap holds for concurrent requests in any number of API
  processes (see :func:`check_active_jobs`). Uploads are not counted: their jobs are born ``succeeded``.
- **Open event streams and waiting long polls per key** (SBAUDIT_MAX_STREAMS_PER_KEY,
  SBAUDIT_MAX_LONG_POLLS_PER_KEY), counted in each API process: each holds a connection and reads the
  database every poll interval until it ends. A slot is held only while a request waits (a finished job is
  answered at once, without one) and is given back however the request ends, the client going away included.

A cap of 0 turns that cap off.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service.errors import Problem
from service.group_commit import RunAlone
from service.jobstore import ACTIVE_STATES, QUEUED, WAITING
from service.models import Job

ACTIVE_JOB_STATES = (WAITING, QUEUED, *ACTIVE_STATES)
ACTIVE_JOBS_SETTING = "SBAUDIT_MAX_ACTIVE_JOBS_PER_OWNER"
ACTIVE_JOBS_RETRY_AFTER_SECONDS = 10
SLOT_RETRY_AFTER_SECONDS = 5

# The first half of this module's two-part PostgreSQL advisory lock keys (the second: a hash of the owner),
# so they cannot meet a lock someone else takes on the same database with a one-part key.
_ADVISORY_LOCK_SPACE = 0x5BA0_0001
_LOCK_OWNER = text("SELECT pg_advisory_xact_lock(:space, hashtext(:owner))")
_TRY_LOCK_OWNER = text("SELECT pg_try_advisory_xact_lock(:space, hashtext(:owner))")
_OWNERS_LOCKED = "sbaudit_owners_locked"  # session.info: owners whose lock this transaction holds


def _lock_owner(session: Session, owner: str) -> None:
    """On PostgreSQL, take ``owner``'s advisory lock until the transaction ends. (SQLite needs none: a write
    transaction holds the database's write lock from its BEGIN IMMEDIATE.)

    Group commit may put several owners' creates in one transaction. Waiting for a second owner's lock
    while holding a first could deadlock with another API process's transaction holding them the other way
    round; so only a transaction that holds none waits, and one that would have to wait for a second asks
    for its batch to run again one write at a time (RunAlone)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    held: set[str] = session.info.setdefault(_OWNERS_LOCKED, set())
    if owner in held:
        return
    params = {"space": _ADVISORY_LOCK_SPACE, "owner": owner}
    if not held:
        session.execute(_LOCK_OWNER, params)
    elif not session.execute(_TRY_LOCK_OWNER, params).scalar():
        raise RunAlone
    held.add(owner)


def active_jobs(session: Session, owner: str) -> int:
    """The owner's active jobs: those committed, and those earlier writes of this transaction added.

    Group commit flushes a batch's rows only at its end (service/group_commit.py), so a query does not see
    the jobs the batch's other creates added: they are still in ``session.new``."""
    committed = session.scalar(
        select(func.count()).select_from(Job).where(Job.owner == owner, Job.state.in_(ACTIVE_JOB_STATES))
    )
    pending = sum(
        1
        for row in session.new
        if isinstance(row, Job) and row.owner == owner and row.state in ACTIVE_JOB_STATES
    )
    return int(committed or 0) + pending


def check_active_jobs(session: Session, owner: str, cap: int) -> None:
    """429 when ``owner`` already has ``cap`` active jobs (0: no cap). Call it in the write transaction that
    adds the job, before adding it.

    It is atomic: no other transaction can add a job for the owner between this count and the commit. On
    SQLite the transaction holds the write lock; on PostgreSQL the owner's advisory lock, taken first, makes
    a concurrent create for the same owner (in any API process) wait until this one commits. The count is a
    statement of its own after the lock, so under READ COMMITTED it sees every job committed until then."""
    if cap <= 0:
        return
    _lock_owner(session, owner)
    active = active_jobs(session, owner)
    if active >= cap:
        raise Problem(
            429,
            f"you have {active} active jobs (waiting, queued or running), the most one owner may have "
            f"({ACTIVE_JOBS_SETTING}={cap}); wait for one to finish or cancel one, then retry",
            slug="too-many-active-jobs",
            headers={"Retry-After": str(ACTIVE_JOBS_RETRY_AFTER_SECONDS)},
            active_jobs=active,
            max_active_jobs=cap,
        )


@dataclass
class KeySlots:
    """How many requests of one kind each key has open in this API process, up to ``cap`` (0: no cap).

    Used on the event loop only, so plain counts suffice."""

    cap: int
    what: str  # "event streams open", completing "this API key has N ..."
    setting: str
    slug: str
    advice: str
    _held: Counter[str] = field(default_factory=Counter)

    def take(self, key_id: str) -> Callable[[], None]:
        """Hold a slot for ``key_id``; returns the function that gives it back (calling it again does
        nothing). Raises the 429 when the key holds all of them."""
        if self.cap <= 0:
            return _nothing
        held = self._held[key_id]
        if held >= self.cap:
            raise Problem(
                429,
                f"this API key has {held} {self.what} in this API process, the most allowed "
                f"({self.setting}={self.cap}); {self.advice}",
                slug=self.slug,
                headers={"Retry-After": str(SLOT_RETRY_AFTER_SECONDS)},
            )
        self._held[key_id] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._held[key_id] -= 1
            if self._held[key_id] <= 0:
                del self._held[key_id]

        return release

    @contextmanager
    def hold(self, key_id: str) -> Iterator[None]:
        release = self.take(key_id)
        try:
            yield
        finally:
            release()

    def held(self, key_id: str) -> int:
        return self._held.get(key_id, 0)


def _nothing() -> None:
    return None


def stream_slots(cap: int) -> KeySlots:
    return KeySlots(
        cap,
        what="event streams open",
        setting="SBAUDIT_MAX_STREAMS_PER_KEY",
        slug="too-many-streams",
        advice="close one, then retry",
    )


def long_poll_slots(cap: int) -> KeySlots:
    return KeySlots(
        cap,
        what="long polls (GET /v1/jobs/{id}?wait=) waiting",
        setting="SBAUDIT_MAX_LONG_POLLS_PER_KEY",
        slug="too-many-long-polls",
        advice="wait for one to return, then retry",
    )
