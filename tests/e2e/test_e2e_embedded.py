"""Embedded mode as a user runs it: `sbaudit serve` (SQLite + local executor) and plain HTTP."""

from __future__ import annotations

import signal
import time

from e2e_flows import (
    FAILING_DATASETS_ENV,
    INTERRUPTIBLE_UPDATES,
    SMALL_LMS5,
    attacks_and_plots,
    create,
    dataset_model_audit,
    failing_input_fails_dependents,
    long_training,
    pipeline_in_three_posts,
    ready,
    wait_until_training,
)
from service_testing import fields, problem


def test_dataset_model_audit(embedded):
    with embedded.client() as client:
        dataset_model_audit(client)
        assert client.get("/metrics").status_code == 200


def test_the_pipeline_in_three_posts_then_one_wait(embedded):
    with embedded.client() as client:
        pipeline_in_three_posts(client)


def test_a_failed_dataset_fails_the_jobs_waiting_for_it(tmp_path):
    from e2e_support import start_server

    server = start_server(tmp_path, **FAILING_DATASETS_ENV)
    try:
        with server.client() as client:
            failing_input_fails_dependents(client)
    finally:
        server.proc.stop()


def test_attack_checks_and_their_plots(embedded):
    with embedded.client() as client:
        attacks_and_plots(client)


def test_cancel_a_running_training_job(embedded):
    with embedded.client() as client:
        dataset = ready(client, "datasets", create(client, "/v1/datasets", {**SMALL_LMS5, "seed": 7}))
        model = long_training(client, dataset["id"], max_updates=1_000_000)
        wait_until_training(client, model["job_id"])
        response = client.post(f"/v1/jobs/{model['job_id']}/cancel")
        assert response.status_code == 202 and response.json()["state"] in ("canceling", "canceled")
        started = time.monotonic()
        job = client.get(f"/v1/jobs/{model['job_id']}", params={"wait": 30}).json()
        assert job["state"] == "canceled", job
        assert time.monotonic() - started < 15
        final = client.get(f"/v1/models/{model['id']}").json()
        assert final["status"] == "canceled" and final["artifacts"] == []
        assert not (embedded.data_dir / "checkpoints" / f"{model['job_id']}.pt").exists()


def test_auth_and_problems_over_http(embedded):
    with embedded.client(key="sbk_not-a-key") as client:
        problem(client.get("/v1/jobs"), 401)
    with embedded.client() as client:
        assert "body.blocks.0.k" in fields(
            client.post("/v1/datasets", json={"blocks": [{"type": "slab", "k": 4}]})
        )
        problem(client.get("/v1/models/mdl_AAAAAAAAAAAAAAAA"), 404)


def test_stopping_the_server_releases_running_jobs_and_the_next_start_resumes_them(tmp_path):
    from e2e_support import start_server, wait_for_job

    server = start_server(tmp_path)
    try:
        with server.client() as client:
            dataset = ready(client, "datasets", create(client, "/v1/datasets", {**SMALL_LMS5, "seed": 5}))
            model = long_training(client, dataset["id"], max_updates=INTERRUPTIBLE_UPDATES)
            checkpoint = server.data_dir / "checkpoints" / f"{model['job_id']}.pt"
            job = wait_until_training(client, model["job_id"])
            while not checkpoint.exists():
                job = wait_until_training(client, model["job_id"], min_progress=job["progress"])
    finally:
        server.proc.stop()  # SIGTERM, as Ctrl-C would
    # A clean shutdown (uvicorn re-raises the SIGTERM it handled, hence -15), not a kill after the grace time.
    assert server.proc.process.returncode in (0, -signal.SIGTERM), server.proc.output()[-2000:]
    assert "released" in server.proc.output()
    assert checkpoint.exists()

    server = start_server(tmp_path)  # same data dir: the job is queued again and resumes
    try:
        with server.client() as client:
            job = wait_for_job(client, model["job_id"])
            assert job["state"] == "succeeded" and job["attempt"] == 1, job
            final = client.get(f"/v1/models/{model['id']}").json()
            assert final["result"]["updates"] == INTERRUPTIBLE_UPDATES
    finally:
        server.proc.stop()
