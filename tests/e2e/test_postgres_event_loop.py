"""On PostgreSQL the API reads and writes on the event loop (psycopg's async connections, one engine per
loop), not in worker threads; a connection the server dropped is replaced on the next read without an error
reaching the client, and writes still commit or roll back as a whole."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest
from e2e_support import PG_ADMIN_URL, private_database
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from service import migrate
from service.db import Database
from service.models import ApiKey


@pytest.fixture(scope="module")
def db():
    with private_database() as url:
        migrate.upgrade(url)
        database = Database.connect(url)
        yield database
        database.dispose()


def _add_key(session, name: str) -> None:
    session.add(ApiKey(id=f"key_{name}", owner=name, key_hash=f"hash-{name}", prefix=name[:12]))


def _owners(conn) -> list[str]:
    return list(conn.execute(select(ApiKey.owner).order_by(ApiKey.owner)).scalars())


def _backend_pid(conn) -> int:
    return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_reads_and_writes_run_on_the_event_loop(db: Database):
    seen = []

    def write(session):
        seen.append(threading.get_ident())
        _add_key(session, "loop-writer")

    def read(conn):
        seen.append(threading.get_ident())
        return _owners(conn)

    async def main():
        await db.run_write(write)
        owners = await db.run_read(read)
        await db.close_loop_engine()
        return owners

    assert "loop-writer" in asyncio.run(main())
    assert seen == [threading.get_ident()] * 2


def test_a_failed_write_rolls_back_everything(db: Database):
    def write(session):
        _add_key(session, "rolled-back")
        session.flush()
        _add_key(session, "rolled-back")  # the same primary key again

    async def main():
        with pytest.raises(IntegrityError):
            await db.run_write(write)
        owners = await db.run_read(_owners)
        await db.close_loop_engine()
        return owners

    assert "rolled-back" not in asyncio.run(main())


def test_a_read_survives_its_pooled_connection_being_dropped(db: Database):
    async def main():
        first = await db.run_read(_backend_pid)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:  # what a server restart does
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        second = await db.run_read(_backend_pid)
        await db.close_loop_engine()
        return first, second

    first, second = asyncio.run(main())
    assert second != first


def test_concurrent_writes_share_a_transaction_and_fail_alone(db: Database):
    """Group commit on PostgreSQL: one transaction for a burst of writes; a duplicate key among them reaches
    only the write that caused it."""
    transactions = []

    def write(session, name: str, key_hash: str | None = None) -> str:
        transactions.append(session.execute(text("SELECT txid_current()")).scalar_one())
        session.add(ApiKey(id=f"key_{name}", owner=name, key_hash=key_hash or f"hash-{name}", prefix="sbk"))
        return name

    async def main():
        shared = await asyncio.gather(
            *(db.run_write(lambda s, n=n: write(s, f"group-{n}")) for n in range(8))
        )
        clash = await asyncio.gather(
            db.run_write(lambda s: write(s, "clash-a", key_hash="clash")),
            db.run_write(lambda s: write(s, "clash-b", key_hash="clash")),
            db.run_write(lambda s: write(s, "clash-c")),
            return_exceptions=True,
        )
        owners = await db.run_read(_owners)
        await db.close_loop_engine()
        return shared, clash, owners

    shared, clash, owners = asyncio.run(main())
    assert shared == [f"group-{n}" for n in range(8)]
    assert len(set(transactions[:8])) == 1
    assert clash[0] == "clash-a" and isinstance(clash[1], IntegrityError) and clash[2] == "clash-c"
    assert {"clash-a", "clash-c"} <= set(owners) and "clash-b" not in owners


def test_a_write_survives_its_pooled_connection_being_dropped(db: Database):
    """Nothing of the transaction was committed when its first statement found the connection gone: it runs
    again on a new connection, and the client never sees the restart."""

    async def main():
        first = await db.run_read(_backend_pid)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        await db.run_write(lambda session: _add_key(session, "after-drop"))
        owners = await db.run_read(_owners)
        await db.close_loop_engine()
        return owners

    assert "after-drop" in asyncio.run(main())
