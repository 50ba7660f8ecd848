"""Faults in embedded mode (`sbaudit serve`: SQLite + the local executor's job subprocesses): a job process
killed while writing artifacts is run again by the executor and recorded once, and queued jobs survive an
API restart. A client polling meanwhile sees 2xx, 503 problem+json or a connection error, never a 500.
"""

from __future__ import annotations

import os
import signal

from e2e_flows import SMALL_LMS5, TINY_LMS5, create, long_training
from e2e_support import start_server, wait_for_job
from faults_support import (
    Poller,
    assert_nothing_left_behind,
    assert_recorded_once,
    restart_api,
    wait_for_file,
)

from worker.faults import marker_path

MODEL_KINDS = ["history", "training_curves", "weights"]


def kill_at(server, point: str, job_id: str) -> None:
    """Wait until the job's process pauses at ``point``, then SIGKILL that process (not the server)."""
    pid = int(wait_for_file(marker_path(server.data_dir, point, job_id), timeout=120, watch=server.proc))
    os.kill(pid, signal.SIGKILL)


def test_a_job_process_killed_while_writing_artifacts_is_run_again_and_recorded_once(tmp_path):
    # Every job pauses once (its first attempt) at each point: the dataset job is killed with its blobs
    # stored but not recorded, the training job inside the transaction that records them.
    server = start_server(
        tmp_path, SBAUDIT_WORKERS="1", SBAUDIT_FAULT_PAUSE="mid_artifacts:300,after_artifacts:300"
    )
    try:
        with server.client() as client:
            dataset = create(client, "/v1/datasets", {**SMALL_LMS5, "seed": 61})
            with Poller(server.base_url, server.key, dataset["job_id"]):
                kill_at(server, "mid_artifacts", dataset["job_id"])
                # The re-run passes mid_artifacts (paused once already) and stops at after_artifacts.
                kill_at(server, "after_artifacts", dataset["job_id"])
                job = wait_for_job(client, dataset["job_id"], timeout=120)
            assert job["state"] == "succeeded" and job["attempt"] == 3, job
            assert_recorded_once(client, "datasets", dataset)
            assert_nothing_left_behind(server, client, dataset["job_id"])

            model = long_training(client, dataset["id"], max_updates=300)
            with Poller(server.base_url, server.key, model["job_id"]):
                kill_at(server, "mid_artifacts", model["job_id"])
                kill_at(server, "after_artifacts", model["job_id"])
                job = wait_for_job(client, model["job_id"], timeout=120)
            assert job["state"] == "succeeded" and job["attempt"] == 3, job
            final = assert_recorded_once(client, "models", model, MODEL_KINDS)
            assert final["result"]["updates"] == 300
            assert_nothing_left_behind(server, client, model["job_id"])
        assert server.proc.output().count("died (exit code -9)") == 4
    finally:
        server.proc.stop()


def test_queued_jobs_survive_an_api_restart(tmp_path):
    server = start_server(tmp_path, SBAUDIT_WORKERS="1")
    try:
        with server.client() as client:
            created = [create(client, "/v1/datasets", {**TINY_LMS5, "seed": 70 + i}) for i in range(3)]
            states = [client.get(f"/v1/jobs/{c['job_id']}").json()["state"] for c in created]
            assert states.count("queued") >= 2, states  # one worker: the others wait
            with Poller(server.base_url, server.key, created[-1]["job_id"]):
                restart_api(server, tmp_path)
                jobs = [wait_for_job(client, c["job_id"], timeout=120) for c in created]
            assert [j["state"] for j in jobs] == ["succeeded"] * 3, jobs
            assert all(j["attempt"] == 1 for j in jobs), jobs
            for c in created:
                assert_recorded_once(client, "datasets", c)
                assert_nothing_left_behind(server, client, c["job_id"])
    finally:
        server.proc.stop()
