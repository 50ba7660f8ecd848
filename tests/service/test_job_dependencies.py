"""Job dependencies: a job created before its inputs are ready waits for them (``waiting``, ``waiting_for``),
is queued when they all are, and fails at once, naming the input, when one fails or is canceled; cancel
cascades only when asked; checks, budgets, caps and idempotency apply at submission.

Jobs are moved here through the job store as a worker would (claim, then finish), without running them.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_testing import LMS5_DESCRIPTION, fields, problem
from sqlalchemy import update

from service import jobstore
from service.app import create_app
from service.inputs import dataset_description
from service.models import Dataset

LMS5 = {"preset": "LMS-5", "n_train": 100, "n_val": 10, "n_test": 10}
FCN = {"name": "fcn", "width": 20, "depth": 1}
TRAINING = {"stop": {"max_updates": 20}}


def succeed(db, job_id: str, **resource_fields: Any) -> list[str]:
    """Claim and finish a job as the runner records a result; the jobs it queued."""
    assert jobstore.claim_job(db, job_id=job_id, worker_id="w", lease_seconds=30) is not None
    with db.write_session() as session:
        job = jobstore.lock_own_job(session, job_id=job_id, worker_id="w")
        assert job is not None
        return jobstore.finish(session, job, jobstore.SUCCEEDED, **resource_fields)


def fail(db, job_id: str, error: str) -> None:
    assert jobstore.claim_job(db, job_id=job_id, worker_id="w", lease_seconds=30) is not None
    assert jobstore.end_job(db, job_id=job_id, worker_id="w", state=jobstore.FAILED, error=error)


def get(client, auth, path: str) -> dict[str, Any]:
    response = client.get(path, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def post(client, auth, path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post(path, json=body, headers={**auth, **headers})
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


def pipeline(client, auth) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The README pipeline in three POSTs back to back: dataset, model on it, audit of the model."""
    dataset = post(client, auth, "/v1/datasets", LMS5)
    model = post(
        client, auth, "/v1/models", {"dataset_id": dataset["id"], "architecture": FCN, "training": TRAINING}
    )
    audit = post(
        client,
        auth,
        "/v1/audits",
        {"model_id": model["id"], "checks": ["randomization"], "simple_blocks": [0]},
    )
    return dataset, model, audit


def job_of(client, auth, resource: dict[str, Any]) -> dict[str, Any]:
    return get(client, auth, f"/v1/jobs/{resource['job_id']}")


def test_three_posts_wait_for_each_other_and_queue_in_turn(client, auth, db):
    dataset, model, audit = pipeline(client, auth)
    assert dataset["status"] == "queued" and job_of(client, auth, dataset)["waiting_for"] == []
    assert model["status"] == "waiting" and audit["status"] == "waiting"
    assert job_of(client, auth, model)["state"] == "waiting"
    assert job_of(client, auth, model)["waiting_for"] == [dataset["id"]]
    assert job_of(client, auth, audit)["waiting_for"] == [model["id"], dataset["id"]]
    assert model["input_shape"] == [50] and model["num_classes"] == 2  # from the dataset's request
    assert get(client, auth, "/v1/jobs?state=waiting")["data"][0]["id"] == audit["job_id"]
    # waiting jobs are never claimed
    assert jobstore.claim_job(db, job_id=model["job_id"], worker_id="x", lease_seconds=30) is None
    assert jobstore.queued_job_ids(db) == [dataset["job_id"]]

    assert succeed(db, dataset["job_id"], description=LMS5_DESCRIPTION) == [model["job_id"]]
    assert job_of(client, auth, model)["state"] == "queued"
    assert get(client, auth, f"/v1/models/{model['id']}")["status"] == "queued"
    assert job_of(client, auth, model)["waiting_for"] == []
    assert job_of(client, auth, audit)["state"] == "waiting"
    assert job_of(client, auth, audit)["waiting_for"] == [model["id"]]

    assert succeed(db, model["job_id"]) == [audit["job_id"]]
    assert job_of(client, auth, audit)["state"] == "queued"
    assert get(client, auth, f"/v1/audits/{audit['id']}")["status"] == "queued"


def test_a_failed_input_fails_its_dependents_down_the_chain_naming_it(client, auth, db):
    dataset, model, audit = pipeline(client, auth)
    fail(db, dataset["job_id"], "n_train too small")
    model_job, audit_job = job_of(client, auth, model), job_of(client, auth, audit)
    assert model_job["state"] == "failed" and model_job["finished_at"] is not None
    assert model_job["error"] == f"input dataset {dataset['id']} failed: n_train too small"
    assert audit_job["state"] == "failed"
    assert audit_job["error"].startswith(f"input model {model['id']} failed: input dataset {dataset['id']}")
    assert get(client, auth, f"/v1/models/{model['id']}")["status"] == "failed"
    assert get(client, auth, f"/v1/audits/{audit['id']}")["error"] == audit_job["error"]


def test_a_failed_model_fails_its_audit_and_not_its_siblings(client, auth, db):
    dataset, model, audit = pipeline(client, auth)
    other = post(client, auth, "/v1/models", {"dataset_id": dataset["id"], "architecture": FCN})
    succeed(db, dataset["job_id"], description=LMS5_DESCRIPTION)
    fail(db, model["job_id"], "diverged")
    assert job_of(client, auth, audit)["error"] == f"input model {model['id']} failed: diverged"
    assert job_of(client, auth, other)["state"] == "queued"


def test_canceling_an_input_fails_its_dependents_unless_asked_to_cascade(client, auth, db):
    dataset, model, audit = pipeline(client, auth)
    canceled = client.post(f"/v1/jobs/{dataset['job_id']}/cancel", headers=auth)
    assert canceled.status_code == 202 and canceled.json()["state"] == "canceled"
    assert job_of(client, auth, model)["error"] == f"input dataset {dataset['id']} was canceled"
    assert job_of(client, auth, audit)["state"] == "failed"

    dataset, model, audit = pipeline(client, auth)
    canceled = client.post(f"/v1/jobs/{dataset['job_id']}/cancel?cascade=true", headers=auth)
    assert canceled.status_code == 202
    for resource in (model, audit):
        job = job_of(client, auth, resource)
        assert job["state"] == "canceled" and job["finished_at"] is not None
    assert job_of(client, auth, model)["error"] == f"canceled with its input dataset {dataset['id']}"
    assert job_of(client, auth, audit)["error"] == f"canceled with its input model {model['id']}"
    assert get(client, auth, f"/v1/audits/{audit['id']}")["status"] == "canceled"


def test_a_waiting_job_is_canceled_at_once(client, auth, db):
    dataset, model, audit = pipeline(client, auth)
    canceled = client.post(f"/v1/jobs/{model['job_id']}/cancel", headers=auth).json()
    assert canceled["state"] == "canceled"
    assert get(client, auth, f"/v1/models/{model['id']}")["status"] == "canceled"
    assert job_of(client, auth, audit)["error"] == f"input model {model['id']} was canceled"
    assert job_of(client, auth, dataset)["state"] == "queued"  # an input is never canceled by its user
    assert succeed(db, dataset["job_id"], description=LMS5_DESCRIPTION) == []


def test_the_sweep_moves_on_a_job_whose_wake_up_was_lost(client, auth, db):
    """An input that became ready or failed without the waiting job being looked at (a crash between the
    two): the reaper's pass queues it, or fails it."""
    ready_input, model, audit = pipeline(client, auth)
    failed_input = post(client, auth, "/v1/datasets", {**LMS5, "seed": 1})
    other = post(client, auth, "/v1/models", {"dataset_id": failed_input["id"], "architecture": FCN})
    with db.write_session() as session:
        session.execute(update(Dataset).where(Dataset.id == ready_input["id"]).values(status="ready"))
        session.execute(
            update(Dataset).where(Dataset.id == failed_input["id"]).values(status="failed", error="boom")
        )
    assert jobstore.settle_all_waiting(db) == [model["job_id"]]
    assert job_of(client, auth, other)["error"] == f"input dataset {failed_input['id']} failed: boom"
    assert job_of(client, auth, audit)["state"] == "waiting"
    assert jobstore.settle_all_waiting(db) == []


def test_an_input_that_failed_or_was_canceled_is_a_409_naming_the_field(client, auth, db):
    failed, canceled = (post(client, auth, "/v1/datasets", {**LMS5, "seed": s}) for s in (1, 2))
    fail(db, failed["job_id"], "boom")
    client.post(f"/v1/jobs/{canceled['job_id']}/cancel", headers=auth)
    for dataset, status in ((failed, "failed: boom"), (canceled, "canceled")):
        body = problem(
            client.post("/v1/models", json={"dataset_id": dataset["id"], "architecture": FCN}, headers=auth),
            409,
        )
        assert body["field"] == "body.dataset_id" and body["type"].endswith("input-unusable")
        assert f"dataset {dataset['id']} is {status}; it will never be ready" in body["detail"]
    missing = {"dataset_id": "ds_AAAAAAAAAAAAAAAA", "architecture": FCN}
    problem(client.post("/v1/models", json=missing, headers=auth), 404)


def test_requests_on_waiting_inputs_are_checked_against_their_requests(client, auth):
    dataset = post(client, auth, "/v1/datasets", LMS5)
    images = {"dataset_id": dataset["id"], "architecture": {"name": "resnet18"}}
    assert "body.architecture.name" in fields(client.post("/v1/models", json=images, headers=auth))
    model = post(client, auth, "/v1/models", {"dataset_id": dataset["id"], "architecture": FCN})
    blocks = {"model_id": model["id"], "checks": ["randomization"], "simple_blocks": [2]}
    assert "body.simple_blocks.0" in fields(client.post("/v1/audits", json=blocks, headers=auth))
    split = {"model_id": model["id"], "checks": ["randomization"], "split": "val"}
    no_val = post(client, auth, "/v1/datasets", {**LMS5, "n_val": 0})
    on_no_val = post(client, auth, "/v1/models", {"dataset_id": no_val["id"], "architecture": FCN})
    assert "body.split" in fields(client.post("/v1/audits", json={**split, "model_id": on_no_val["id"]},
                                              headers=auth))  # fmt: skip
    post(client, auth, "/v1/audits", split)


def test_budgets_use_the_waiting_datasets_request(client, auth, db, settings, ready_dataset):
    """The estimate of a job on a waiting dataset is the one it gets once that dataset is ready, and the
    budget holds: the same request is fine on a small waiting dataset and over budget on a large one."""
    dataset = post(client, auth, "/v1/datasets", LMS5)
    body = {"architecture": FCN, "training": TRAINING}
    waiting = post(client, auth, "/v1/models", {**body, "dataset_id": dataset["id"]})
    ready = post(client, auth, "/v1/models", {**body, "dataset_id": ready_dataset()})
    assert job_of(client, auth, waiting)["estimate"] == job_of(client, auth, ready)["estimate"]

    small_work = job_of(client, auth, waiting)["estimate"]["work"]
    large = post(client, auth, "/v1/datasets", {"preset": "LMS-5", "n_train": 1_000_000})
    budget = settings.model_copy(update={"max_job_work": 2 * small_work})
    with TestClient(create_app(budget, db=db)) as limited:
        post(limited, auth, "/v1/models", {**body, "dataset_id": dataset["id"]})
        response = limited.post("/v1/models", json={**body, "dataset_id": large["id"]}, headers=auth)
        assert "body.dataset_id" in fields(response)


def test_waiting_jobs_count_against_the_active_job_cap(settings, db, auth):
    app = create_app(settings.model_copy(update={"max_active_jobs_per_owner": 2}), db=db)
    with TestClient(app) as client:
        dataset = post(client, auth, "/v1/datasets", LMS5)
        model = post(client, auth, "/v1/models", {"dataset_id": dataset["id"], "architecture": FCN})
        audit = {"model_id": model["id"], "checks": ["randomization"]}
        problem(client.post("/v1/audits", json=audit, headers=auth), 429)
        assert get(client, auth, "/v1/usage")["counts"]["active_jobs"] == 2


def test_idempotent_replay_of_a_waiting_submission(client, auth):
    dataset = post(client, auth, "/v1/datasets", LMS5)
    body = {"dataset_id": dataset["id"], "architecture": FCN}
    first = post(client, auth, "/v1/models", body, **{"Idempotency-Key": "model-1"})
    again = client.post("/v1/models", json=body, headers={**auth, "Idempotency-Key": "model-1"})
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first["id"]
    assert len(get(client, auth, "/v1/jobs?state=waiting")["data"]) == 1


def test_inputs_with_waiting_dependents_cannot_be_deleted(client, auth):
    dataset, model, _ = pipeline(client, auth)
    assert problem(client.delete(f"/v1/models/{model['id']}", headers=auth), 409)["detail"].startswith(
        f"model {model['id']} is waiting"
    )
    client.post(f"/v1/jobs/{dataset['job_id']}/cancel", headers=auth)
    assert (
        "is used by" in problem(client.delete(f"/v1/datasets/{dataset['id']}", headers=auth), 409)["detail"]
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"preset": "LMS-5", "n_train": 40, "n_val": 10, "n_test": 20},
        {"preset": "AdvMS-(5,7)", "n_train": 40, "n_val": 0, "n_test": 20},
        {"preset": "MS-5", "n_train": 40, "n_test": 20, "n_val": 4, "rotate": False},
        {"blocks": [{"type": "linear"}, {"type": "slab", "k": 3, "count": 4}, {"type": "noise", "count": 2}],
         "n_train": 30, "n_val": 6, "n_test": 8},
    ],
)  # fmt: skip
def test_a_waiting_datasets_derived_description_matches_the_generated_one(spec):
    from sbengine.data import build_dataset
    from service.schemas.datasets import DatasetCreate

    body = DatasetCreate.model_validate(spec)
    row = Dataset(id="ds_x", owner="a", status="queued", job_id="j", spec=body.model_dump(exclude_none=True))
    derived = dataset_description(row)
    generated = build_dataset(body.engine_request()).describe()
    for key in ("input_shape", "num_classes", "sizes", "rotated"):
        assert derived[key] == generated[key], key
    assert len(derived["blocks"]) == len(generated["blocks"])


def test_on_postgresql_an_input_finishing_during_a_submission_never_leaves_it_waiting(settings):
    """The runner's finishing transaction has marked the dataset ready and looked for waiting jobs (none
    yet) but not committed; a model submitted now must not read the dataset as still running and wait
    forever: it waits for the dataset's row lock, then reads it ready and is queued."""
    from e2e.e2e_support import private_database

    from service import migrate
    from service.auth import create_key
    from service.db import Database

    with private_database() as url:
        migrate.upgrade(url)
        db = Database.connect(url)
        try:
            key, _ = create_key(db, owner="alice")
            auth = {"Authorization": f"Bearer {key}"}
            app = create_app(settings.model_copy(update={"database_url": url}), db=db)
            with TestClient(app) as client:
                dataset = post(client, auth, "/v1/datasets", LMS5)
                assert jobstore.claim_job(db, job_id=dataset["job_id"], worker_id="w", lease_seconds=30)
                outcome: dict[str, Any] = {}

                def submit_model() -> None:
                    body = {"dataset_id": dataset["id"], "architecture": FCN}
                    outcome["response"] = client.post("/v1/models", json=body, headers=auth)

                with db.write_session() as session:
                    job = jobstore.lock_own_job(session, job_id=dataset["job_id"], worker_id="w")
                    assert job is not None
                    assert (
                        jobstore.finish(session, job, jobstore.SUCCEEDED, description=LMS5_DESCRIPTION) == []
                    )
                    session.flush()
                    thread = threading.Thread(target=submit_model)
                    thread.start()
                    thread.join(timeout=1.0)
                    assert thread.is_alive() and not outcome  # waiting for the dataset's row
                thread.join(timeout=30)
                model = outcome["response"].json()
                assert model["status"] == "queued", model
                assert job_of(client, auth, model)["waiting_for"] == []
        finally:
            db.dispose()
