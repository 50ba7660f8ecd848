"""/v1/jobs: get, list, wait, cancel."""

from __future__ import annotations

import time

from service_testing import problem

from service import jobstore


def _queue(client, auth, seed=0):
    return client.post("/v1/datasets", json={"preset": "LMS-5", "seed": seed}, headers=auth).json()


def test_cancel_a_queued_job_cancels_it_and_its_resource(client, auth):
    created = _queue(client, auth)
    response = client.post(f"/v1/jobs/{created['job_id']}/cancel", headers=auth)
    assert response.status_code == 202
    assert response.json()["state"] == "canceled"
    dataset = client.get(f"/v1/datasets/{created['id']}", headers=auth).json()
    assert dataset["status"] == "canceled"
    # Canceling again is a no-op.
    assert client.post(f"/v1/jobs/{created['job_id']}/cancel", headers=auth).json()["state"] == "canceled"


def test_cancel_a_running_job_asks_it_to_stop(client, auth, db):
    created = _queue(client, auth)
    assert jobstore.claim_job(db, job_id=created["job_id"], worker_id="w1", lease_seconds=30)
    assert client.post(f"/v1/jobs/{created['job_id']}/cancel", headers=auth).json()["state"] == "canceling"
    assert jobstore.renew_lease(db, job_id=created["job_id"], worker_id="w1", lease_seconds=30) == "canceling"


def test_cannot_cancel_a_finished_job(client, auth, db):
    created = _queue(client, auth)
    jobstore.claim_job(db, job_id=created["job_id"], worker_id="w1", lease_seconds=30)
    jobstore.end_job(db, job_id=created["job_id"], worker_id="w1", state="failed", error="boom")
    body = problem(client.post(f"/v1/jobs/{created['job_id']}/cancel", headers=auth), 409)
    assert "failed" in body["detail"]
    assert client.get(f"/v1/datasets/{created['id']}", headers=auth).json()["error"] == "boom"


def test_list_filters(client, auth, db):
    a, b = _queue(client, auth, 0), _queue(client, auth, 1)
    client.post(f"/v1/jobs/{a['job_id']}/cancel", headers=auth)
    listed = client.get("/v1/jobs", params={"state": "canceled"}, headers=auth).json()["data"]
    assert [j["id"] for j in listed] == [a["job_id"]]
    by_resource = client.get("/v1/jobs", params={"resource_id": b["id"]}, headers=auth).json()["data"]
    assert [j["id"] for j in by_resource] == [b["job_id"]]
    assert client.get("/v1/jobs", params={"kind": "train_model"}, headers=auth).json()["data"] == []
    problem(client.get("/v1/jobs", params={"state": "sleeping"}, headers=auth), 422)


def test_wait_returns_early_when_the_job_ends(client, auth):
    created = _queue(client, auth)
    started = time.monotonic()
    assert (
        client.get(f"/v1/jobs/{created['job_id']}", params={"wait": 0.5}, headers=auth).json()["state"]
        == "queued"
    )
    assert 0.4 < time.monotonic() - started < 5
    client.post(f"/v1/jobs/{created['job_id']}/cancel", headers=auth)
    started = time.monotonic()
    assert (
        client.get(f"/v1/jobs/{created['job_id']}", params={"wait": 30}, headers=auth).json()["state"]
        == "canceled"
    )
    assert time.monotonic() - started < 2
    problem(client.get(f"/v1/jobs/{created['job_id']}", params={"wait": 61}, headers=auth), 422)
