"""Per-owner cap on active jobs (SBAUDIT_MAX_ACTIVE_JOBS_PER_OWNER) and the atomic job-rate budget.

A create request over the cap is a 429 problem with Retry-After that queues nothing, an Idempotency-Key
replay is still answered, and the cap holds for concurrent requests: in one group-commit batch, across
batches, and on PostgreSQL across API processes (each its own Database and event loop). The job-rate token
bucket is taken before a request runs, so concurrent requests cannot all pass on the same tokens.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from service_testing import problem, queue_job
from sqlalchemy import event, func, select

from service import jobstore, migrate
from service.app import create_app
from service.caps import check_active_jobs
from service.db import Database
from service.errors import Problem
from service.group_commit import RunAlone
from service.ids import new_id
from service.models import Dataset, Job

LMS5 = {"preset": "LMS-5", "n_train": 100, "n_val": 10, "n_test": 10}
UNLIMITED_RATES = {"rate_limit_per_second": 0.0, "job_rate_limit_per_minute": 0.0}


def active_jobs(db: Database, owner: str) -> int:
    with db.read_session() as session:
        query = (
            select(func.count())
            .select_from(Job)
            .where(Job.owner == owner, Job.state.in_(("queued", "running", "canceling")))
        )
        return int(session.scalar(query) or 0)


def add_job(session, owner: str) -> str:
    """A dataset and its queued job, as POST /v1/datasets writes them."""
    row = Dataset(id=new_id("dataset"), owner=owner, status="queued", job_id="", spec={})
    job = jobstore.create_job(
        session, owner=owner, kind="generate_dataset", resource_type="dataset", resource_id=row.id,
        params={}, max_attempts=3,
    )  # fmt: skip
    row.job_id = job.id
    session.add(row)
    return job.id


def create_capped(owner: str, cap: int):
    """A write as ``submit`` makes it: the cap check, then the job."""

    def write(session) -> str:
        check_active_jobs(session, owner, cap)
        return add_job(session, owner)

    return write


@pytest.fixture
def capped_client(settings, db):
    def make(**overrides) -> TestClient:
        app = create_app(settings.model_copy(update={**UNLIMITED_RATES, **overrides}), db=db)
        return TestClient(app)

    return make


def test_a_create_over_the_cap_is_a_429_with_retry_after_and_queues_nothing(
    capped_client, db, auth, ready_dataset, ready_model
):
    client = capped_client(max_active_jobs_per_owner=3)
    created = [client.post("/v1/datasets", json={**LMS5, "seed": i}, headers=auth) for i in range(3)]
    assert [r.status_code for r in created] == [202] * 3

    refused = client.post("/v1/datasets", json={**LMS5, "seed": 9}, headers=auth)
    body = problem(refused, 429)
    assert body["type"] == "urn:sbaudit:problem:too-many-active-jobs"
    assert body["active_jobs"] == 3 and body["max_active_jobs"] == 3
    assert "SBAUDIT_MAX_ACTIVE_JOBS_PER_OWNER=3" in body["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    model = {"dataset_id": ready_dataset(), "architecture": {"name": "fcn"}}
    problem(client.post("/v1/models", json=model, headers=auth), 429)
    audit = {"model_id": ready_model(), "checks": ["randomization"]}
    problem(client.post("/v1/audits", json=audit, headers=auth), 429)
    assert active_jobs(db, "alice") == 3

    # Ended jobs do not count: cancel one (queued: canceled at once) and there is room for one more.
    assert client.post(f"/v1/jobs/{created[0].json()['job_id']}/cancel", headers=auth).status_code == 202
    assert client.post("/v1/datasets", json={**LMS5, "seed": 10}, headers=auth).status_code == 202
    problem(client.post("/v1/datasets", json={**LMS5, "seed": 11}, headers=auth), 429)


def test_the_cap_is_per_owner_and_zero_turns_it_off(capped_client, db, auth, other_auth):
    client = capped_client(max_active_jobs_per_owner=1)
    assert client.post("/v1/datasets", json=LMS5, headers=auth).status_code == 202
    problem(client.post("/v1/datasets", json=LMS5, headers=auth), 429)
    assert client.post("/v1/datasets", json=LMS5, headers=other_auth).status_code == 202

    unlimited = capped_client(max_active_jobs_per_owner=0)
    statuses = [
        unlimited.post("/v1/datasets", json={**LMS5, "seed": i}, headers=auth).status_code for i in range(5)
    ]
    assert statuses == [202] * 5


def test_an_idempotent_replay_is_answered_at_the_cap(capped_client, db, auth):
    client = capped_client(max_active_jobs_per_owner=1)
    first = client.post("/v1/datasets", json=LMS5, headers={**auth, "Idempotency-Key": "k1"})
    assert first.status_code == 202
    replay = client.post("/v1/datasets", json=LMS5, headers={**auth, "Idempotency-Key": "k1"})
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    problem(client.post("/v1/datasets", json=LMS5, headers={**auth, "Idempotency-Key": "k2"}), 429)
    assert active_jobs(db, "alice") == 1


def test_concurrent_posts_at_cap_minus_one_create_exactly_one_job(settings, db, auth):
    for _ in range(4):
        queue_job(db, owner="alice")
    app = create_app(settings.model_copy(update={**UNLIMITED_RATES, "max_active_jobs_per_owner": 5}), db=db)

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=auth) as client:
            posts = [client.post("/v1/datasets", json={**LMS5, "seed": i}) for i in range(20)]
            return [r.status_code for r in await asyncio.gather(*posts)]

    statuses = asyncio.run(main())
    assert sorted(statuses) == [202] + [429] * 19
    assert active_jobs(db, "alice") == 5


def test_creates_sharing_one_group_commit_batch_count_each_others_jobs(db):
    """Group commit flushes a batch's rows only at its end: the jobs the batch's earlier writes added must
    count all the same."""
    commits: list[None] = []
    event.listen(db.engine, "commit", lambda conn: commits.append(None))

    async def main():
        writes = [db.run_write(create_capped("carol", 3)) for _ in range(10)]
        return await asyncio.gather(*writes, return_exceptions=True)

    results = asyncio.run(main())
    created = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, Problem)]
    assert len(created) == 3 and len(refused) == 7, results
    assert all(p.status == 429 for p in refused)
    assert active_jobs(db, "carol") == 3
    assert len(commits) < 10  # they did share transactions


def test_a_write_raising_run_alone_gets_its_batch_run_one_write_at_a_time(db):
    calls: list[tuple[str, int]] = []

    def write(session, name: str, alone_only: bool) -> str:
        batch_size = 1 + sum(isinstance(row, Job) for row in session.new)  # this write and those before it
        calls.append((name, batch_size))
        if alone_only and batch_size > 1:
            raise RunAlone
        add_job(session, name)
        return name

    async def main():
        return await asyncio.gather(
            *(db.run_write(lambda s, n=n: write(s, f"w{n}", alone_only=n == 2)) for n in range(4))
        )

    assert asyncio.run(main()) == ["w0", "w1", "w2", "w3"]
    assert ("w2", 3) in calls and ("w2", 1) in calls  # refused in the batch, then run on its own
    assert sum(active_jobs(db, f"w{n}") for n in range(4)) == 4


def test_job_creating_requests_cannot_overspend_the_job_budget_concurrently(settings, db, auth):
    limits = {"rate_limit_per_second": 0.0, "job_rate_limit_per_minute": 6.0, "job_rate_limit_burst": 2}
    app = create_app(settings.model_copy(update={**limits, "max_active_jobs_per_owner": 0}), db=db)
    app.state.clock = lambda: 1000.0  # no refill during the test

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=auth) as client:
            await client.get("/v1/datasets")  # the key is verified: its bucket is the key's
            posts = [client.post("/v1/datasets", json={**LMS5, "seed": i}) for i in range(10)]
            return [r.status_code for r in await asyncio.gather(*posts)]

    statuses = asyncio.run(main())
    assert sorted(statuses) == [202, 202] + [429] * 8
    assert active_jobs(db, "alice") == 2


# PostgreSQL: the scaled mode, where several API processes write at once.


@pytest.fixture(scope="module")
def pg_url():
    from e2e.e2e_support import private_database

    with private_database() as url:
        migrate.upgrade(url)
        yield url


def test_on_postgresql_a_concurrent_create_waits_for_the_first_and_counts_its_job(pg_url):
    db, other = Database.connect(pg_url), Database.connect(pg_url)
    try:
        with db.write_session() as session:
            add_job(session, "dave")
        outcome: dict[str, object] = {}

        def second_create() -> None:
            try:
                with other.write_session() as session:
                    check_active_jobs(session, "dave", 2)
                    add_job(session, "dave")
                outcome["created"] = True
            except Problem as exc:
                outcome["problem"] = exc

        with db.write_session() as session:
            check_active_jobs(session, "dave", 2)
            add_job(session, "dave")
            session.flush()  # inserted, not committed
            thread = threading.Thread(target=second_create)
            thread.start()
            thread.join(timeout=1.0)
            # Without the owner's lock it would have counted 1 job and added a third by now.
            assert thread.is_alive() and not outcome
        thread.join(timeout=30)
        assert isinstance(outcome.get("problem"), Problem) and outcome["problem"].status == 429
        assert active_jobs(db, "dave") == 2
    finally:
        db.dispose()
        other.dispose()


def test_on_postgresql_two_api_processes_at_cap_minus_one_create_exactly_one_job(pg_url, settings):
    from service.auth import create_key

    setup = Database.connect(pg_url)
    key, _ = create_key(setup, owner="erin")
    for _ in range(3):
        with setup.write_session() as session:
            add_job(session, "erin")
    pg_settings = settings.model_copy(
        update={**UNLIMITED_RATES, "database_url": pg_url, "max_active_jobs_per_owner": 4}
    )
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def api_process() -> None:
        db = Database.connect(pg_url)
        app = create_app(pg_settings, db=db)

        async def main() -> list[int]:
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
                await client.get("/v1/datasets")
                barrier.wait(timeout=30)
                posts = [client.post("/v1/datasets", json={**LMS5, "seed": i}) for i in range(8)]
                responses = await asyncio.gather(*posts)
            await db.close_loop_engine()
            return [r.status_code for r in responses]

        try:
            statuses.extend(asyncio.run(main()))
        finally:
            db.dispose()

    threads = [threading.Thread(target=api_process) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert sorted(statuses) == [202] + [429] * 15
        assert active_jobs(setup, "erin") == 4
    finally:
        setup.dispose()
