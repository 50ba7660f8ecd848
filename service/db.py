"""Database engines and sessions, for SQLite (embedded) and PostgreSQL (scaled) alike.

SQLite runs in WAL mode with a busy timeout so the API and job subprocesses can write the same file. Its
default deferred transactions fail at once with "database is locked" when a transaction that has read
upgrades to a write while another process writes; so transactions opened through :func:`write_session`
start with ``BEGIN IMMEDIATE`` (they take the write lock up front and wait for it), while read-only
sessions stay deferred and never block each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

T = TypeVar("T")

_IMMEDIATE = "sbaudit_sqlite_immediate"

# "The database cannot be reached right now" (restarting, failing over, connections dropped, pool
# exhausted), as opposed to a wrong statement: the API answers 503, the worker retries.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """An engine for ``url``. ``pooled=False`` (workers) opens a connection per session, so no connection
    is ever inherited across a fork."""
    kwargs: dict = {}
    if not pooled:
        kwargs["poolclass"] = NullPool
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        if pooled:
            # Connections are cheap local handles: allow one per threadpool thread rather than queueing.
            kwargs.update(pool_size=40, max_overflow=10)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001 - DBAPI types
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own transaction handling is buggy).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclass
class Database:
    """One engine per process plus the two session factories."""

    engine: Engine
    read: sessionmaker[Session]
    write: sessionmaker[Session]
    pid: int

    @classmethod
    def connect(cls, url: str, *, pooled: bool = True) -> Database:
        engine = make_engine(url, pooled=pooled)
        write_bind = engine.execution_options(**{_IMMEDIATE: True})
        return cls(
            engine=engine,
            read=sessionmaker(engine, expire_on_commit=False),
            write=sessionmaker(write_bind, expire_on_commit=False),
            pid=os.getpid(),
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

    def dispose(self) -> None:
        self.engine.dispose()
