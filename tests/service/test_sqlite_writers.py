"""How writers share the SQLite file (service/db.py): in-process writers queue on a Python lock held exactly
while SQLite's write lock is, and ``run_write`` runs on the event loop when it can without ever blocking
it for longer than a job process's transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
from sqlalchemy import text

from service.db import Database, WriterBusy
from service.models import ApiKey


def owner_count(db: Database, owner: str) -> int:
    with db.read_session() as session:
        return session.query(ApiKey).filter_by(owner=owner).count()


def add_key(session, owner: str) -> None:
    session.add(ApiKey(id=f"key_{owner}", owner=owner, key_hash=f"hash-{owner}", prefix="sbk_test"))
    session.flush()


def writer_in_a_thread(db: Database) -> tuple[threading.Thread, threading.Event]:
    """A thread that holds the write lock (a transaction that has written) until the returned event is set."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.write_session() as session:
            add_key(session, "holder")
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    return thread, release


def test_writers_in_threads_take_turns_without_errors(db: Database):
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(20):
                with db.write_session() as session:
                    add_key(session, f"t{n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with db.read_session() as session:
        assert session.query(ApiKey).filter(ApiKey.owner.like("t%")).count() == 160


def test_the_lock_is_given_back_after_commit_rollback_and_error(db: Database):
    with db.write_session() as session:
        add_key(session, "committed")
    with pytest.raises(RuntimeError), db.write_session() as session:
        add_key(session, "rolled-back")
        raise RuntimeError("boom")
    # Both released: a no-wait writer gets the lock at once.
    with db.write_nowait() as session, session.begin():
        session.connection()
        add_key(session, "after")
    assert [owner_count(db, o) for o in ("committed", "rolled-back", "after")] == [1, 0, 1]


def test_a_no_wait_writer_is_refused_while_a_thread_writes(db: Database):
    thread, release = writer_in_a_thread(db)
    try:
        with pytest.raises(WriterBusy), db.write_nowait() as session, session.begin():
            session.connection()
    finally:
        release.set()
        thread.join()
    assert owner_count(db, "holder") == 1


def test_run_write_runs_on_the_event_loop_when_the_lock_is_free(db: Database):
    def write(session) -> int:
        add_key(session, "inline")
        return threading.get_ident()

    async def main() -> tuple[int, int]:
        return threading.get_ident(), await db.run_write(write)

    loop_thread, writer_thread = asyncio.run(main())
    assert writer_thread == loop_thread
    assert owner_count(db, "inline") == 1


def test_run_write_waits_for_another_process_without_blocking_the_loop(db: Database, settings):
    """Another connection (a job process) holds SQLite's write lock for 300 ms: the loop keeps ticking and
    the write lands once the lock is free."""
    other = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    async def main() -> float:
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, other.execute, "COMMIT")
        started = time.monotonic()
        await db.run_write(lambda session: add_key(session, "waited"))
        stop.set()
        await ticking
        return time.monotonic() - started

    try:
        waited = asyncio.run(main())
    finally:
        other.close()
    assert waited >= 0.25
    assert ticks >= 20, "the event loop was blocked while the write waited"
    assert owner_count(db, "waited") == 1


def test_run_write_rolls_back_when_fn_raises(db: Database):
    def fail(session) -> None:
        add_key(session, "never")
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        asyncio.run(db.run_write(fail))
    assert owner_count(db, "never") == 0
    with db.write_session() as session:  # the lock was given back
        session.execute(text("SELECT 1"))


def test_the_api_servers_wal_is_checkpointed_by_a_thread_not_by_commits(settings):
    """`sbaudit serve` opens its database with background checkpoints: commits never checkpoint (that held
    the event loop for milliseconds), and a thread copies the WAL into the database file within moments."""
    from service import migrate

    migrate.upgrade(settings.database_url)
    path = settings.data_dir / "sbaudit.db"
    db = Database.connect(settings.database_url, background_checkpoints=True)
    try:
        with db.read_session() as session:
            assert session.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
        size_before = path.stat().st_size
        for n in range(200):  # far below the 1,000 pages that would make a commit checkpoint
            with db.write_session() as session:
                add_key(session, f"wal-{n}")
        deadline = time.monotonic() + 5
        while path.stat().st_size <= size_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size > size_before, "nothing was checkpointed into the database file"
    finally:
        db.dispose()
    assert not db.checkpointer._thread.is_alive()


def test_other_processes_keep_checkpointing_on_commit(db: Database):
    with db.read_session() as session:
        assert session.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 1000
    assert db.checkpointer is None


def test_writers_on_the_event_loop_queue_instead_of_all_polling(db: Database):
    """While a thread holds the write lock, only the first waiting request polls for it; the others queue.
    (With 64 clients all polling every millisecond, the polling used up the CPU.)"""
    attempts = 0
    make_session = db.write_nowait

    def counting_session():
        nonlocal attempts
        attempts += 1
        return make_session()

    db.write_nowait = counting_session

    async def main() -> None:
        thread, release = writer_in_a_thread(db)
        asyncio.get_running_loop().call_later(0.08, release.set)
        await asyncio.gather(*(db.run_write(lambda s, n=n: add_key(s, f"queued-{n}")) for n in range(32)))
        thread.join()

    asyncio.run(main())
    with db.read_session() as session:
        assert session.query(ApiKey).filter(ApiKey.owner.like("queued-%")).count() == 32
    assert attempts < 32 + 200, attempts
