"""/v1/jobs: get, list, wait, cancel."""

from __future__ import annotations

import threading
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


def _wait_in_a_thread(client, auth, url: str, answers: list) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: answers.append(client.get(url, headers=auth).json()["state"]), daemon=True
    )
    thread.start()
    return thread


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def test_a_long_poll_answers_when_told_the_job_ended(client, app, auth, db, monkeypatch):
    """The executor's notification (embedded mode: the job's process ended) wakes the waiting request: with
    the re-read interval made an hour, only the notification can answer it before the 60 s wait is up."""
    monkeypatch.setattr("service.routes.jobs._WAIT_POLL_SECONDS", 3600.0)
    job_id = _queue(client, auth)["job_id"]
    answers: list[str] = []
    thread = _wait_in_a_thread(client, auth, f"/v1/jobs/{job_id}?wait=60", answers)
    job_ends = app.state.job_ends
    _until(lambda: job_ends.waiting() == 1, "the request sleeps on the job")
    assert jobstore.claim_job(db, job_id=job_id, worker_id="w1", lease_seconds=30)
    assert jobstore.end_job(db, job_id=job_id, worker_id="w1", state="failed", error="boom")
    job_ends.notify("job_someoneelse")  # another job's end only wakes that job's waiters
    job_ends.notify(job_id)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the long poll was not woken by the notification"
    assert answers == ["failed"]
    assert job_ends.waiting() == 0


def test_a_long_poll_woken_while_the_job_still_runs_sleeps_again(client, app, auth, db, monkeypatch):
    """A job process that died without recording an end (the reaper re-queues the job) also notifies: the
    request reads the job, finds it still active and waits on."""
    monkeypatch.setattr("service.routes.jobs._WAIT_POLL_SECONDS", 3600.0)
    job_ends = app.state.job_ends
    sleeps: list[str] = []
    real_sleep = job_ends.sleep

    async def counted_sleep(job_id: str, seconds: float) -> None:
        sleeps.append(job_id)
        await real_sleep(job_id, seconds)

    monkeypatch.setattr(job_ends, "sleep", counted_sleep)
    job_id = _queue(client, auth)["job_id"]
    answers: list[str] = []
    thread = _wait_in_a_thread(client, auth, f"/v1/jobs/{job_id}?wait=60", answers)
    _until(lambda: job_ends.waiting() == 1, "the request sleeps on the job")
    job_ends.notify(job_id)
    _until(lambda: len(sleeps) == 2 and job_ends.waiting() == 1, "the request sleeps on the job again")
    assert answers == [] and thread.is_alive()
    client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    job_ends.notify(job_id)
    thread.join(timeout=30)
    assert answers == ["canceled"]
