"""Listing stays indexed: every list query is served by its (owner, created_at, id) index, read in order
(no sort), on SQLite and on PostgreSQL, with filters and cursors, when one owner has thousands of rows
among many owners' (with a handful of matching rows PostgreSQL rightly prefers a bitmap scan and a sort)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from e2e_support import private_database
from sqlalchemy import insert, select, text

from service import migrate
from service.db import make_engine
from service.models import Audit, Dataset, Job, Model
from service.pagination import encode_cursor, page_query

OWNERS = 40
ROWS_PER_OWNER = 100
BUSY_OWNER, BUSY_ROWS = 7, 5000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _fill(engine) -> None:
    jobs, datasets, models, audits = [], [], [], []
    for o in range(OWNERS):
        for i in range(BUSY_ROWS if o == BUSY_OWNER else ROWS_PER_OWNER):
            at = (T0 + timedelta(seconds=o * BUSY_ROWS + i)).replace(tzinfo=None)
            common = {"owner": f"owner{o}", "created_at": at, "updated_at": at}
            jobs.append(
                {
                    **common,
                    "id": f"job_{o}_{i}",
                    "kind": "generate_dataset",
                    "resource_type": "dataset",
                    "resource_id": f"ds_{o}_{i}",
                    "state": ("queued", "running", "succeeded")[i % 3],
                    "params": {},
                    "progress": 0.0,
                    "attempt": 1,
                    "max_attempts": 3,
                }
            )
            resource = {**common, "status": "ready", "job_id": f"job_{o}_{i}"}
            datasets.append({**resource, "id": f"ds_{o}_{i}", "spec": {}})
            models.append(
                {
                    **resource,
                    "id": f"mdl_{o}_{i}",
                    "dataset_id": f"ds_{o}_{i}",
                    "architecture": {},
                    "training": {},
                    "seed": 0,
                    "source": "train",
                }
            )
            audits.append(
                {
                    **resource,
                    "id": f"aud_{o}_{i}",
                    "model_id": f"mdl_{o}_{i}",
                    "dataset_id": f"ds_{o}_{i}",
                    "params": {},
                }
            )
    with engine.begin() as conn:
        for table, rows in ((Job, jobs), (Dataset, datasets), (Model, models), (Audit, audits)):
            conn.execute(insert(table), rows)
        conn.execute(text("ANALYZE"))


def _queries():
    cursor = encode_cursor(T0 + timedelta(seconds=BUSY_OWNER * BUSY_ROWS + 2500), "job_7_2500")
    yield (
        "jobs",
        "ix_jobs_owner_created",
        page_query(select(Job).where(Job.owner == "owner7"), Job, limit=20, cursor=None),
    )
    yield (
        "jobs+cursor",
        "ix_jobs_owner_created",
        page_query(select(Job).where(Job.owner == "owner7"), Job, limit=20, cursor=cursor),
    )
    yield (
        "jobs?state",
        "ix_jobs_owner_state_created",
        page_query(
            select(Job).where(Job.owner == "owner7", Job.state == "queued"), Job, limit=20, cursor=None
        ),
    )
    for table, index in (
        (Dataset, "ix_datasets_owner_created"),
        (Model, "ix_models_owner_created"),
        (Audit, "ix_audits_owner_created"),
    ):
        yield (
            table.__tablename__,
            index,
            page_query(select(table).where(table.owner == "owner7"), table, limit=20, cursor=None),
        )


def _plan(engine, query) -> str:
    compiled = query.compile(dialect=engine.dialect)
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    params = (
        compiled.params
        if engine.dialect.name != "sqlite"
        else tuple(compiled.params[k] for k in compiled.positiontup)
    )
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + str(compiled), params).all()
    return "\n".join(str(r[-1]) for r in rows)


def _check(engine) -> None:
    migrate.upgrade(engine.url.render_as_string(hide_password=False))
    _fill(engine)
    for name, index, query in _queries():
        plan = _plan(engine, query)
        assert index in plan, f"{name}: not served by {index}:\n{plan}"
        assert "TEMP B-TREE" not in plan and "Sort" not in plan.split("->")[0] and " Sort " not in plan, (
            f"{name}: sorts instead of reading the index in order:\n{plan}"
        )


def test_list_queries_use_their_index_on_sqlite(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    try:
        _check(engine)
    finally:
        engine.dispose()


@pytest.mark.timeout(120)
def test_list_queries_use_their_index_on_postgresql():
    with private_database() as url:
        engine = make_engine(url)
        try:
            _check(engine)
        finally:
            engine.dispose()
