"""Database engines and sessions, for SQLite (embedded) and PostgreSQL (scaled) alike.

SQLite runs in WAL mode with a busy timeout so the API and job subprocesses can write the same file. Its
default deferred transactions fail at once with "database is locked" when a transaction that has read
upgrades to a write while another process writes; so transactions opened through :func:`write_session`
start with ``BEGIN IMMEDIATE`` (they take the write lock up front and wait for it), while read-only
sessions stay deferred and never block each other.

Within one process, writers also queue on a Python lock taken just before ``BEGIN IMMEDIATE`` and given
back when the connection returns to the pool (after its commit or rollback). SQLite's own wait is a busy
handler that naps with growing back-off, up to 100 ms a nap, even when the lock frees a moment later; 16
request threads taking turns that way made the 99th-percentile POST ten times slower than its median
(BENCHMARKS.md). A waiter on the Python lock wakes as soon as it is released, and the busy handler is left to
arbitrate between processes only.

:meth:`Database.run_write` runs a short write transaction from async code (the create endpoints). On SQLite
it runs on the event loop: the lock is nearly always free, and the transaction takes a fraction of a
millisecond, less than the trip to a worker thread. It never blocks the loop for longer than a job
process's transaction (``_LOOP_WAIT_MILLISECONDS``); past that it retries every millisecond in between other
requests, and hands the write to a thread only if the lock stays taken for ``_LOOP_WRITE_PATIENCE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

T = TypeVar("T")
log = logging.getLogger("sbaudit.db")

_IMMEDIATE = "sbaudit_sqlite_immediate"
_NOWAIT = "sbaudit_sqlite_nowait"
_HOLDS_WRITE_LOCK = "sbaudit_holds_write_lock"
_BUSY_TIMEOUT_SECONDS = 30
_LOOP_WRITE_PATIENCE_SECONDS = 0.1
_LOOP_WAIT_MILLISECONDS = 3

# "The database cannot be reached right now" (restarting, failing over, connections dropped, pool
# exhausted), as opposed to a wrong statement: the API answers 503, the worker retries.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


# Each SQLite engine's in-process writer lock, for the WalCheckpointer of the same engine.
_WRITER_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


class WriterBusy(Exception):
    """A no-wait SQLite write transaction found the write lock taken (by this process or another one)."""


def make_engine(url: str, *, pooled: bool = True, checkpoint_on_commit: bool = True) -> Engine:
    """An engine for ``url``. ``pooled=False`` (workers) opens a connection per session, so no connection
    is ever inherited across a fork. ``checkpoint_on_commit=False`` (SQLite): leave the WAL to a
    :class:`WalCheckpointer`."""
    kwargs: dict = {}
    if not pooled:
        kwargs["poolclass"] = NullPool
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": _BUSY_TIMEOUT_SECONDS, "check_same_thread": False}
        if pooled:
            # Connections are cheap local handles: allow one per threadpool thread rather than queueing.
            kwargs.update(pool_size=40, max_overflow=10)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine, checkpoint_on_commit=checkpoint_on_commit)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine, *, checkpoint_on_commit: bool) -> None:
    # Not an RLock: the thread that checks a connection in may not be the one that began its transaction.
    writer = _WRITER_LOCKS[engine] = threading.Lock()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001 - DBAPI types
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own transaction handling is buggy).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_SECONDS * 1000}")
        cur.execute("PRAGMA foreign_keys=ON")
        if not checkpoint_on_commit:
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        options = conn.get_execution_options()
        if not options.get(_IMMEDIATE, False):
            conn.exec_driver_sql("BEGIN")
        elif options.get(_NOWAIT, False):
            _begin_without_waiting(conn)
        else:
            _begin_waiting(conn)

    def _take_writer_lock(conn, *, wait: bool) -> bool:  # noqa: ANN001
        if conn.info.get(_HOLDS_WRITE_LOCK):  # a second transaction on the same checkout keeps it
            return True
        taken = writer.acquire(timeout=_BUSY_TIMEOUT_SECONDS) if wait else writer.acquire(blocking=False)
        if not taken:
            return False
        conn.info[_HOLDS_WRITE_LOCK] = True
        return True

    def _begin_waiting(conn) -> None:  # noqa: ANN001
        if not _take_writer_lock(conn, wait=True):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(conn.info)
            raise

    def _begin_without_waiting(conn) -> None:  # noqa: ANN001
        if not _take_writer_lock(conn, wait=False):
            raise WriterBusy
        # The raw DB-API connection: these run on every POST, and SQLAlchemy's statement path costs more than
        # SQLite does here. A job process's transactions take a millisecond or two: waiting that long is
        # cheaper than coming back after every other request on the event loop has had its turn.
        dbapi = conn.connection.dbapi_connection
        dbapi.execute(f"PRAGMA busy_timeout={_LOOP_WAIT_MILLISECONDS}")
        try:
            dbapi.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # another process holds SQLite's lock
            _release(conn.info)
            raise WriterBusy from exc
        finally:
            dbapi.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_SECONDS * 1000}")

    def _release(info: dict) -> None:
        if info.pop(_HOLDS_WRITE_LOCK, False):
            writer.release()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record):  # noqa: ANN001
        _release(record.info)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(_dbapi_conn, record, _exception):  # noqa: ANN001
        _release(record.info)


class WalCheckpointer:
    """Copies the write-ahead log into the database file from a thread of its own, for a process whose
    connections do not checkpoint on commit (the API server).

    SQLite checkpoints inside the commit that takes the WAL past 1,000 pages. Under a burst of POSTs that
    is several times a second, each holding the event loop, and with it every request, for 2-11 ms
    (BENCHMARKS.md). Here a pass runs every ``interval`` seconds while holding the process's writer lock, so
    that no write of this process lands in the middle: the pass completes, and the next writer starts the
    WAL over instead of growing it. Writers on the event loop wait out a pass between other requests.
    """

    def __init__(self, engine: Engine, interval: float = 0.2) -> None:
        self.path, self.interval = engine.url.database, interval
        self.writer = _WRITER_LOCKS[engine]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sbaudit-wal-checkpointer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            while not self._stop.wait(self.interval):
                if not self.writer.acquire(timeout=self.interval):
                    continue
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # a busy or failing disk: try again next time
                    log.warning("WAL checkpoint failed: %s", exc)
                finally:
                    self.writer.release()
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Database:
    """One engine per process plus the two session factories."""

    engine: Engine
    read: sessionmaker[Session]
    write: sessionmaker[Session]
    write_nowait: sessionmaker[Session]
    pid: int
    checkpointer: WalCheckpointer | None = None
    _loop_locks: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)

    @classmethod
    def connect(cls, url: str, *, pooled: bool = True, background_checkpoints: bool = False) -> Database:
        """``background_checkpoints`` (SQLite; the API server): a :class:`WalCheckpointer` thread copies
        the WAL into the database instead of the commits that happen to fill it."""
        background = background_checkpoints and url.startswith("sqlite")
        engine = make_engine(url, pooled=pooled, checkpoint_on_commit=not background)
        write_bind = engine.execution_options(**{_IMMEDIATE: True})
        return cls(
            engine=engine,
            read=sessionmaker(engine, expire_on_commit=False),
            write=sessionmaker(write_bind, expire_on_commit=False),
            write_nowait=sessionmaker(
                write_bind.execution_options(**{_NOWAIT: True}), expire_on_commit=False
            ),
            pid=os.getpid(),
            checkpointer=WalCheckpointer(engine) if background else None,
        )

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        with self.read() as session:
            yield session

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any exception."""
        with self.write() as session, session.begin():
            yield session

    async def run_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a short read from async code. SQLite (a local file in WAL mode, where readers never wait for
        writers) answers in tens of microseconds: on the event loop that is several times cheaper than the
        thread hop, which dominated the polling hot path (BENCHMARKS.md). A database over the network may
        stall, so its reads go to a worker thread."""
        if self.engine.dialect.name == "sqlite":
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    @property
    def writes_on_event_loop(self) -> bool:
        """Whether :meth:`run_write` normally runs on the event loop (SQLite) rather than in a thread."""
        return self.engine.dialect.name == "sqlite"

    async def run_write(self, fn: Callable[[Session], T], *, then: Callable[[T], None] | None = None) -> T:
        """Run ``fn(session)`` in a write transaction from async code: committed when it returns, rolled back
        when it raises. ``then(result)`` runs after the commit, in the same place, so that a blocking
        follow-up (a broker round trip) shares the thread the transaction already needed.

        On SQLite it runs on the event loop as soon as the write lock is free, checking every millisecond
        without blocking the loop, and waits in a worker thread only if the lock stays taken (a long
        transaction elsewhere); on a server database it always runs in a thread. Going to a thread at the
        first refusal is worse than it sounds: a request waiting in a thread holds its place in the lock queue
        while it waits for the interpreter, so the next requests find the lock taken too and follow it, and
        the event loop ends up handing nearly every write to threads."""
        if self.writes_on_event_loop:
            # One writer of this event loop at a time tries for the lock; the others queue here, in order,
            # instead of all polling it (64 clients polling every millisecond used up the CPU).
            async with self._loop_writers():
                deadline = time.monotonic() + _LOOP_WRITE_PATIENCE_SECONDS
                while True:
                    try:
                        with self.write_nowait() as session, session.begin():
                            session.connection()  # BEGIN now, before fn does any work
                            result = fn(session)
                    except WriterBusy:
                        if time.monotonic() >= deadline:
                            break
                        await asyncio.sleep(0.001)
                        continue
                    if then is not None:
                        then(result)
                    return result
                return await anyio.to_thread.run_sync(self._write, fn, then)
        return await anyio.to_thread.run_sync(self._write, fn, then)

    def _loop_writers(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._loop_locks.get(loop)
        if lock is None:
            lock = self._loop_locks[loop] = asyncio.Lock()
        return lock

    def _write(self, fn: Callable[[Session], T], then: Callable[[T], None] | None) -> T:
        with self.write_session() as session:
            result = fn(session)
        if then is not None:
            then(result)
        return result

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
