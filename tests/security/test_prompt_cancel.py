"""Prompt cancel (issue 14, point 3): a canceled job stuck in one long call, reaching no progress point, is
killed once SBAUDIT_CANCEL_GRACE_SECONDS have passed, and ends ``canceled`` with its files removed, in
embedded mode (the local executor kills its job process) and in scaled mode (the Celery worker's main
process kills its pool child). The stuck call is the fault-injection pause ``handler`` (worker/faults.py):
the job holds its lease and has its scratch dir, and sleeps for minutes.

On main the job stayed ``canceling`` until the sleep ended. A job that reaches a progress point still stops
there, without being killed (tests/worker/test_runner.py, and
:func:`test_the_watch_kills_only_jobs_past_the_grace`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from containment_support import MODES, running_server
from e2e_flows import TINY_LMS5, create
from e2e_support import Server, wait_for_job
from faults_support import assert_nothing_left_behind, wait_for_file
from service_testing import queue_job

from service import jobstore
from service.models import Job
from worker.cancel_watch import CancelWatch
from worker.faults import marker_path

GRACE = 2.0


@pytest.fixture(scope="module", params=MODES)
def server(request, tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"cancel-{request.param}")
    env = {"SBAUDIT_CANCEL_GRACE_SECONDS": str(GRACE), "SBAUDIT_FAULT_PAUSE": "handler:300"}
    with running_server(request.param, tmp, **env) as started:
        yield started


def test_a_canceled_job_stuck_in_one_long_call_is_killed_and_ends_canceled(server: Server):
    with server.client() as client:
        dataset = create(client, "/v1/datasets", {**TINY_LMS5, "seed": 140})
        job_id = dataset["job_id"]
        watch = server.proc if not server.workers else server.workers[0]
        wait_for_file(marker_path(server.data_dir, "handler", job_id), timeout=120, watch=watch)
        assert list((server.data_dir / "scratch").glob(f"{job_id}-*")), "the stuck job has files"

        asked = time.monotonic()
        response = client.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 202 and response.json()["state"] == "canceling", response.text
        job = wait_for_job(client, job_id, timeout=60)
        took = time.monotonic() - asked

        assert job["state"] == "canceled" and job["error"] == "canceled by the user", job
        assert took < GRACE + 5, f"canceled {took:.1f} s after the request"
        resource = client.get(f"/v1/datasets/{dataset['id']}").json()
        assert resource["status"] == "canceled", resource
        assert_nothing_left_behind(server, client, job_id)
    logs = server.proc.output() + "".join(worker.output() for worker in server.workers)
    assert f"job {job_id}: canceled, no progress point within the grace; killing its process" in logs


def test_the_watch_kills_only_jobs_past_the_grace(db, settings):
    """Running jobs that are not canceling are never due; a canceling one is due once the grace has passed
    since the watch first saw it, and ending it marks it canceled."""
    calm, canceled = queue_job(db), queue_job(db)
    for job_id in (calm, canceled):
        jobstore.claim_job(db, job_id=job_id, worker_id=f"w-{job_id}", lease_seconds=30)
    jobstore.cancel_job(db, owner="alice", job_id=canceled)
    watch = CancelWatch(settings.model_copy(update={"cancel_grace_seconds": 0.3}), db)
    assert watch.overdue([calm, canceled]) == {}
    time.sleep(0.4)
    assert watch.overdue([calm, canceled]) == {canceled: f"w-{canceled}"}
    watch.end_killed(canceled, f"w-{canceled}")
    with db.read_session() as session:
        ended = session.get(Job, canceled)
        assert (ended.state, ended.error) == ("canceled", "canceled by the user")
    assert watch.overdue([calm, canceled]) == {}
