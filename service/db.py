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

:meth:`Database.run_write` runs a short write transaction from async code (the create endpoints); the
writes of concurrent requests share one transaction (service/group_commit.py). On SQLite it runs on the
event loop: the lock is nearly always free, and the transaction takes a fraction of a
millisecond, less than the trip to a worker thread. It never blocks the loop for longer than a job
process's transaction (``_LOOP_WAIT_MILLISECONDS``); past that it retries every millisecond in between other
requests, and hands the write to a thread only if the lock stays taken for ``_LOOP_WRITE_PATIENCE_SECONDS``.

On PostgreSQL, :meth:`Database.run_read` and :meth:`Database.run_write` run on the event loop too, through an
asynchronous engine (psycopg's async connections), one per event loop: the functions they are given stay
plain synchronous SQLAlchemy code (``run_sync``), and no request waits for a worker thread. With sixteen
clients polling, those threads (one per request in flight, all contending for the interpreter) had cost more
CPU than the requests themselves (BENCHMARKS.md).
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
from typing import Any, TypeVar, cast

import anyio
from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from service.group_commit import GroupCommit

T = TypeVar("T")
log = logging.getLogger("sbaudit.db")

_IMMEDIATE = "sbaudit_sqlite_immediate"
_NOWAIT = "sbaudit_sqlite_nowait"
_HOLDS_WRITE_LOCK = "sbaudit_holds_write_lock"
_BUSY_TIMEOUT_SECONDS = 30
_LOOP_WRITE_PATIENCE_SECONDS = 0.1
_LOOP_WAIT_MILLISECONDS = 3
# PostgreSQL connections an API process's event loop keeps open. A fixed set: opening one costs the server a
# process (milliseconds of CPU), which is what a pool that closes its overflow on every return does under
# load.
_ASYNC_POOL_SIZE = 16

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
    kwargs: dict[str, Any] = {}
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
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
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
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if not options.get(_IMMEDIATE, False):
            conn.exec_driver_sql("BEGIN")
        elif options.get(_NOWAIT, False):
            _begin_without_waiting(conn)
        else:
            _begin_waiting(conn)

    def _take_writer_lock(conn: Connection, *, wait: bool) -> bool:
        if conn.info.get(_HOLDS_WRITE_LOCK):  # a second transaction on the same checkout keeps it
            return True
        taken = writer.acquire(timeout=_BUSY_TIMEOUT_SECONDS) if wait else writer.acquire(blocking=False)
        if not taken:
            return False
        conn.info[_HOLDS_WRITE_LOCK] = True
        return True

    def _begin_waiting(conn: Connection) -> None:
        if not _take_writer_lock(conn, wait=True):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(conn.info)
            raise

    def _begin_without_waiting(conn: Connection) -> None:
        if not _take_writer_lock(conn, wait=False):
            raise WriterBusy
        # The raw DB-API connection: these run on every POST, and SQLAlchemy's statement path costs more than
        # SQLite does here. A job process's transactions take a millisecond or two: waiting that long is
        # cheaper than coming back after every other request on the event loop has had its turn.
        dbapi = cast(sqlite3.Connection, conn.connection.dbapi_connection)  # pysqlite's, and checked out
        dbapi.execute(f"PRAGMA busy_timeout={_LOOP_WAIT_MILLISECONDS}")
        try:
            dbapi.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # another process holds SQLite's lock
            _release(conn.info)
            raise WriterBusy from exc
        finally:
            dbapi.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_SECONDS * 1000}")

    def _release(info: dict[Any, Any]) -> None:
        if info.pop(_HOLDS_WRITE_LOCK, False):
            writer.release()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: sqlite3.Connection, record: ConnectionPoolEntry) -> None:
        _release(record.info)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(
        _dbapi_conn: sqlite3.Connection, record: ConnectionPoolEntry, _exception: BaseException | None
    ) -> None:
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
        if engine.url.database is None:  # sqlite:// in memory: no file to checkpoint
            raise ValueError("a WAL checkpointer needs an SQLite database file")
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


@dataclass(frozen=True)
class _AsyncEngines:
    """One event loop's asynchronous engine for a PostgreSQL database, and its autocommit view for reads
    (the same pool)."""

    writes: AsyncEngine
    reads: AsyncEngine

    @classmethod
    def for_url(cls, url: URL) -> _AsyncEngines:
        engine = create_async_engine(
            url.set(drivername="postgresql+psycopg"),
            pool_size=_ASYNC_POOL_SIZE,
            max_overflow=0,
        )
        return cls(writes=engine, reads=engine.execution_options(isolation_level="AUTOCOMMIT"))


@dataclass
class Database:
    """One engine per process plus the two session factories."""

    engine: Engine
    read: sessionmaker[Session]
    write: sessionmaker[Session]
    write_nowait: sessionmaker[Session]
    pid: int
    checkpointer: WalCheckpointer | None = None
    _group_commits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    _async_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncEngines] = field(
        default_factory=weakref.WeakKeyDictionary
    )

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
        """Run ``fn(connection, *args)``, a short read, from async code, on the event loop.

        SQLite (a local file in WAL mode, where readers never wait for writers) answers in tens of
        microseconds: a plain connection is several times cheaper than a thread hop. PostgreSQL reads go
        through this loop's asynchronous engine, in autocommit mode (one round trip, no BEGIN or ROLLBACK)."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                return fn(conn, *args)
        # No ping before each use (a round trip per request): a connection the server dropped (a restart)
        # fails at once, which invalidates the pool's connections from before, and the read runs again.
        for attempt in range(2):
            try:
                async with self._async_engines_of_loop().reads.connect() as conn:
                    return await conn.run_sync(fn, *args)
            except DBAPIError as exc:
                if attempt or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    async def run_write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a write transaction from async code: its result comes back once the
        transaction has committed; what it raises comes back after its writes were rolled back.

        Concurrent calls on one event loop share a transaction (service/group_commit.py, which says what
        ``fn`` may rely on: it can run more than once, and it sees only rows committed before its batch)."""
        loop = asyncio.get_running_loop()
        group = self._group_commits.get(loop)
        if group is None:
            sqlite = self.engine.dialect.name == "sqlite"
            group = GroupCommit(self._sqlite_transaction if sqlite else self._postgres_transaction)
            self._group_commits[loop] = group
        return await group.run(fn)

    async def _postgres_transaction(self, apply: Callable[[Session], T]) -> T:
        """On the event loop, through this loop's asynchronous engine.

        As with reads, a connection the server dropped (a restart) fails at its first statement, the pool
        renews its older connections, and the transaction runs again on a new one, once: nothing of it was
        committed. A failed COMMIT is never repeated, since it may have committed all the same."""
        engine = self._async_engines_of_loop().writes
        for attempt in range(2):
            async with AsyncSession(engine, expire_on_commit=False) as session:  # rolls back when left open
                try:
                    result = await session.run_sync(apply)
                except DBAPIError as exc:
                    if attempt or not exc.connection_invalidated:
                        raise
                    continue
                await session.commit()
                return result
        raise AssertionError("unreachable")

    async def _sqlite_transaction(self, apply: Callable[[Session], T]) -> T:
        """On the event loop as soon as the write lock is free, checking every millisecond without blocking
        the loop, and in a worker thread only if the lock stays taken (a long transaction elsewhere). Going
        to a thread at the first refusal is worse than it sounds: a write waiting in a thread holds its place
        in the lock queue while it waits for the interpreter, so the next writes find the lock taken too and
        follow it, and the event loop ends up handing nearly every write to threads."""
        deadline = time.monotonic() + _LOOP_WRITE_PATIENCE_SECONDS
        while True:
            try:
                with self.write_nowait() as session, session.begin():
                    session.connection()  # BEGIN now, before apply does any work
                    return apply(session)
            except WriterBusy:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.001)
        return await anyio.to_thread.run_sync(self._write, apply)

    def _async_engines_of_loop(self) -> _AsyncEngines:
        """The asynchronous engine of the running event loop (its connections belong to that loop)."""
        loop = asyncio.get_running_loop()
        engines = self._async_engines.get(loop)
        if engines is None:
            engines = self._async_engines[loop] = _AsyncEngines.for_url(self.engine.url)
        return engines

    async def close_loop_engine(self) -> None:
        """Close the running event loop's asynchronous connections (when the app shuts down, on that loop)."""
        engines = self._async_engines.pop(asyncio.get_running_loop(), None)
        if engines is not None:
            await engines.writes.dispose()

    def _write(self, fn: Callable[[Session], T]) -> T:
        with self.write_session() as session:
            return fn(session)

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
