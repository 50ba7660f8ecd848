"""Scaled mode: PostgreSQL + Redis + real `sbaudit worker` processes started by the test."""

from __future__ import annotations

import json
import signal

from e2e_flows import (
    FAILING_DATASETS_ENV,
    INTERRUPTIBLE_UPDATES,
    SMALL_LMS5,
    create,
    dataset_model_audit,
    failing_input_fails_dependents,
    long_training,
    pipeline_in_three_posts,
    ready,
    wait_until_training,
)
from e2e_support import private_database, start_server, wait_for_job
from faults_support import PrivateRedis


def test_dataset_model_audit(scaled):
    with scaled.client() as client:
        dataset_model_audit(client)
        ready = client.get("/readyz").json()
        assert ready["checks"]["broker"] == "ok" and ready["checks"]["database"] == "ok"


def test_the_pipeline_in_three_posts_then_one_wait(scaled):
    """The worker that finishes an input sends the jobs that waited for it."""
    with scaled.client() as client:
        pipeline_in_three_posts(client)


def test_a_failed_dataset_fails_the_jobs_waiting_for_it(tmp_path):
    """Its own API, worker, database and Redis: every dataset job fails on this server."""
    redis = PrivateRedis(tmp_path)
    redis.start()
    server = None
    try:
        with private_database() as url:
            server = start_server(
                tmp_path, SBAUDIT_DATABASE_URL=url, SBAUDIT_BROKER_URL=redis.url, **FAILING_DATASETS_ENV
            )
            server.start_worker(tmp_path)
            with server.client() as client:
                failing_input_fails_dependents(client)
            for worker in server.workers:
                worker.stop()
            server.proc.stop()
    finally:
        if server is not None:
            for worker in server.workers:
                worker.kill_group()
            server.proc.kill_group()
        redis.kill()


def test_a_worker_killed_mid_training_is_replaced_and_nothing_is_lost(scaled, tmp_path):
    with scaled.client() as client:
        dataset = ready(client, "datasets", create(client, "/v1/datasets", {**SMALL_LMS5, "seed": 11}))
        model = long_training(client, dataset["id"], max_updates=INTERRUPTIBLE_UPDATES)
        job_id = model["job_id"]
        checkpoint = scaled.data_dir / "checkpoints" / f"{job_id}.pt"
        job = wait_until_training(client, job_id, min_progress=0.0)
        while not checkpoint.exists():
            job = wait_until_training(client, job_id, min_progress=job["progress"])
        assert job["attempt"] == 1

        victim = scaled.workers.pop()
        victim.kill_group(signal.SIGKILL)  # the worker and its job process, as if the machine died
        scaled.start_worker(tmp_path)

        job = wait_for_job(client, job_id)
        assert job["state"] == "succeeded", job
        assert job["attempt"] == 2, "the reaper re-queued the job once"
        models = client.get("/v1/models", params={"dataset_id": dataset["id"]}).json()["data"]
        assert [m["id"] for m in models] == [model["id"]], "exactly one model resource"
        final = models[0]
        assert final["status"] == "ready" and final["result"]["updates"] == INTERRUPTIBLE_UPDATES
        assert sorted(a["kind"] for a in final["artifacts"]) == ["history", "training_curves", "weights"]
        history = json.loads(
            client.get(next(a["url"] for a in final["artifacts"] if a["kind"] == "history")).content
        )
        assert [row["step"] for row in history] == list(range(0, INTERRUPTIBLE_UPDATES + 1, 100)), (
            "history kept across the crash"
        )
        assert not checkpoint.exists()


def test_a_worker_stopped_mid_training_hands_its_job_on(scaled, tmp_path):
    """SIGTERM (docker stop, scaling down): the job goes back to the queue at its next progress point, without
    spending an attempt, and another worker resumes it from the checkpoint."""
    with scaled.client() as client:
        dataset = ready(client, "datasets", create(client, "/v1/datasets", {**SMALL_LMS5, "seed": 12}))
        model = long_training(client, dataset["id"], max_updates=INTERRUPTIBLE_UPDATES)
        job_id = model["job_id"]
        checkpoint = scaled.data_dir / "checkpoints" / f"{job_id}.pt"
        job = wait_until_training(client, job_id)
        while not checkpoint.exists():
            job = wait_until_training(client, job_id, min_progress=job["progress"])

        leaving = scaled.workers.pop()
        leaving.process.send_signal(signal.SIGTERM)
        leaving.process.wait(timeout=60)
        assert "released" in leaving.output()
        scaled.start_worker(tmp_path)

        job = wait_for_job(client, job_id)
        assert job["state"] == "succeeded" and job["attempt"] == 1, job
        final = client.get(f"/v1/models/{model['id']}").json()
        assert final["result"]["updates"] == INTERRUPTIBLE_UPDATES
