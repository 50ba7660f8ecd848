"""Helpers for the service, worker and e2e tests (importable because tests/ is on sys.path via conftest)."""

from __future__ import annotations

from typing import Any

from service import jobstore
from service.ids import new_id
from service.models import Dataset, Job

LMS5_DESCRIPTION: dict[str, Any] = {
    "name": "LMS-5",
    "input_shape": [50],
    "num_classes": 2,
    "blocks": [
        {"name": "linear", "kind": "linear", "indices": [0], "bayes_accuracy": 1.0, "params": {}},
        {
            "name": "49x 5-slab",
            "kind": "slab",
            "indices": list(range(1, 50)),
            "bayes_accuracy": 1.0,
            "params": {},
        },
    ],
    "simple_blocks": [0],
    "sizes": {"train": 100, "val": 10, "test": 10},
    "rotated": True,
    "seed": 0,
    "spec": {"kind": "synthetic"},
}


def problem(response, status: int) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with ``status``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def fields(response) -> list[str]:
    """The fields a 422 problem names."""
    return [e["field"] for e in problem(response, 422)["errors"]]


def queue_job(db, *, owner="alice", max_attempts=3) -> str:
    with db.write_session() as session:
        row = Dataset(id=new_id("dataset"), owner=owner, status="queued", job_id="", spec={})
        job = jobstore.create_job(
            session, owner=owner, kind="generate_dataset", resource_type="dataset", resource_id=row.id,
            params={}, max_attempts=max_attempts,
        )  # fmt: skip
        row.job_id = job.id
        session.add(row)
    return job.id


def state(db, job_id):
    with db.read_session() as session:
        job = session.get(Job, job_id)
        resource = session.get(Dataset, job.resource_id)
        return job, resource
