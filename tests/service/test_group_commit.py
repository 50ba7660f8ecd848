"""Group commit (service/group_commit.py): concurrent ``Database.run_write`` calls on one event loop share a
transaction, and each write still succeeds or fails on its own."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from service import group_commit
from service.db import Database
from service.group_commit import GroupCommit
from service.models import ApiKey, Dataset


def add_key(session, owner: str, key_hash: str | None = None) -> str:
    session.add(
        ApiKey(id=f"key_{owner}", owner=owner, key_hash=key_hash or f"hash-{owner}", prefix="sbk_test")
    )
    return owner


def owners(db: Database) -> list[str]:
    with db.read_session() as session:
        return sorted(session.scalars(select(ApiKey.owner)))


def count_commits(db: Database) -> list[None]:
    commits: list[None] = []
    event.listen(db.engine, "commit", lambda conn: commits.append(None))
    return commits


def test_concurrent_writes_share_one_transaction(db: Database):
    commits = count_commits(db)

    async def main():
        return await asyncio.gather(
            *(db.run_write(lambda s, n=n: add_key(s, f"w{n:02d}")) for n in range(20))
        )

    assert asyncio.run(main()) == [f"w{n:02d}" for n in range(20)]
    assert owners(db) == [f"w{n:02d}" for n in range(20)]
    assert len(commits) == 1


def test_a_lone_write_goes_at_once_and_a_burst_is_split_into_bounded_batches(db: Database):
    commits = count_commits(db)

    async def main():
        await db.run_write(lambda s: add_key(s, "alone"))
        await asyncio.gather(*(db.run_write(lambda s, n=n: add_key(s, f"b{n:02d}")) for n in range(40)))

    asyncio.run(main())
    assert len(owners(db)) == 41
    assert len(commits) == 3  # the lone write, then 32 + 8


def test_a_write_that_raises_fails_alone_and_the_rest_run_again(db: Database):
    calls: dict[str, int] = {}

    def write(session, owner: str):
        calls[owner] = calls.get(owner, 0) + 1
        add_key(session, owner)
        if owner == "bad":
            raise ValueError("refused")
        return owner

    async def main():
        names = ["a", "b", "bad", "c"]
        return await asyncio.gather(
            *(db.run_write(lambda s, o=o: write(s, o)) for o in names), return_exceptions=True
        )

    a, b, bad, c = asyncio.run(main())
    assert (a, b, c) == ("a", "b", "c")
    assert isinstance(bad, ValueError) and str(bad) == "refused"
    assert owners(db) == ["a", "b", "c"]
    assert calls == {"a": 2, "b": 2, "bad": 1, "c": 1}  # a and b were rolled back with "bad" and ran again


def test_a_duplicate_key_in_a_batch_reaches_only_the_write_that_caused_it(db: Database):
    async def main():
        writes = [
            db.run_write(lambda s: add_key(s, "first", key_hash="same")),
            db.run_write(lambda s: add_key(s, "second", key_hash="same")),  # unique key_hash
            db.run_write(lambda s: add_key(s, "third")),
        ]
        return await asyncio.gather(*writes, return_exceptions=True)

    first, second, third = asyncio.run(main())
    assert (first, third) == ("first", "third")
    assert isinstance(second, IntegrityError)
    assert owners(db) == ["first", "third"]


def test_a_failed_commit_fails_every_write_in_it_and_none_runs_again(db: Database):
    calls = 0

    def write(session):
        nonlocal calls
        calls += 1
        add_key(session, f"never-{calls}")

    async def failing_commit(apply):
        with db.write() as session:
            apply(session)
            raise ConnectionError("server closed the connection during COMMIT")

    async def main():
        group = GroupCommit(failing_commit)
        return await asyncio.gather(*(group.run(write) for _ in range(3)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == 3
    assert owners(db) == []


def test_a_write_cancelled_before_its_batch_is_not_run(db: Database):
    ran: list[str] = []

    def write(session, owner):
        ran.append(owner)
        return add_key(session, owner)

    async def main():
        tasks = [asyncio.create_task(db.run_write(lambda s, o=o: write(s, o))) for o in ("x", "y", "z")]
        await asyncio.sleep(0)  # each task is now waiting for the batch, which has not run yet
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    x, y, z = asyncio.run(main())
    assert (x, z) == ("x", "z") and isinstance(y, asyncio.CancelledError)
    assert ran == ["x", "z"]
    assert owners(db) == ["x", "z"]


def test_concurrent_posts_with_one_idempotency_key_create_one_dataset(app, auth, db: Database, monkeypatch):
    """The two requests land in one batch and collide at its flush: run alone, one creates the dataset and
    the other replays its response."""
    batch_sizes: list[int] = []
    apply = group_commit._apply

    def recording_apply(batch, session):
        batch_sizes.append(len(batch))
        return apply(batch, session)

    monkeypatch.setattr(group_commit, "_apply", recording_apply)
    body = {"preset": "LMS-5", "n_train": 100, "n_test": 100, "seed": 0}
    headers = {**auth, "Idempotency-Key": "once"}

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            post = [client.post("/v1/datasets", json=body, headers=headers) for _ in range(2)]
            others = [client.post("/v1/datasets", json={**body, "seed": n}, headers=auth) for n in (1, 2)]
            return await asyncio.gather(*post, *others)

    first, second, *others = asyncio.run(main())
    assert [r.status_code for r in (first, second, *others)] == [202] * 4
    assert first.json() == second.json()
    assert {first.headers.get("idempotent-replayed"), second.headers.get("idempotent-replayed")} == {
        None,
        "true",
    }
    with db.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 3
    assert batch_sizes[0] == 4 and batch_sizes[1:] == [1, 1, 1, 1]


@pytest.mark.parametrize("model", [Dataset, ApiKey])
def test_new_rows_hold_their_defaults_before_any_flush(model):
    """Responses are built from rows before the batch's one flush: the defaults must already be there."""
    row = model(id="x")
    assert row.created_at is not None
    if model is Dataset:
        assert row.spec == {} and row.updated_at is not None
