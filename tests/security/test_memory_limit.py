"""Job memory limits (issue 14, point 2): every job process has a hard memory limit (worker/memory_limit.py);
a job that reaches it ends ``failed`` with "exceeded the memory limit of N GiB", is not retried, leaves no
files, and the API stays healthy (GET /readyz answers 200 throughout, its RSS does not move).

The end-to-end test asks for a dataset whose arrays (4096 noise features x 102,000 rows, 1.6 GB even in
float32) cannot fit a 1.25 GiB limit (SBAUDIT_JOB_MEMORY_LIMIT_BYTES), in embedded and in scaled mode; the
allocation fails inside the engine, which is what must map to the message. On main the job had no limit:
it would have allocated those gigabytes (or been OOM-killed and retried).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from containment_support import MODES, ReadyzWatch, rss_bytes, running_server
from e2e_flows import create
from e2e_support import Server, wait_for_job
from faults_support import assert_nothing_left_behind
from service_testing import queue_job, state

from service.models import Job
from worker import memory_limit
from worker.runner import run_job

LIMIT = 1_342_177_280  # 1.25 GiB: a job process holds about 0.8 GiB once it has imported torch
TOO_BIG = {
    "blocks": [{"type": "noise", "count": 4096}],
    "n_train": 100_000,
    "n_val": 1000,
    "n_test": 1000,
    "seed": 0,
}


@pytest.fixture(scope="module", params=MODES)
def server(request, tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"memory-{request.param}")
    with running_server(request.param, tmp, SBAUDIT_JOB_MEMORY_LIMIT_BYTES=str(LIMIT)) as started:
        yield started


def test_a_job_over_its_memory_limit_fails_with_the_limit_and_the_api_stays_healthy(server: Server):
    api_rss = rss_bytes(server.proc.process.pid)
    with server.client() as client, ReadyzWatch(server.base_url) as readyz:
        dataset = create(client, "/v1/datasets", TOO_BIG)
        job = wait_for_job(client, dataset["job_id"], timeout=120)
    assert job["state"] == "failed" and job["attempt"] == 1, job
    assert job["error"] == "exceeded the memory limit of 1.25 GiB", job
    with server.client() as client:
        resource = client.get(f"/v1/datasets/{dataset['id']}").json()
        assert (resource["status"], resource["error"]) == ("failed", job["error"]), resource
        assert resource["artifacts"] == []
        assert_nothing_left_behind(server, client, job["id"])
        assert client.get("/readyz").status_code == 200
    assert readyz.answers and set(readyz.answers) == {"200"}, readyz.answers
    assert rss_bytes(server.proc.process.pid) < api_rss + (64 << 20)


# Runs one job in a fresh interpreter, as a job process would (the limit cannot be lifted once set): the
# handler allocates and touches 32 MiB chunks until refused; prints the outcome and the process's peak RSS.
_ALLOCATING_JOB = textwrap.dedent(
    """
    import json, sys
    from service.db import Database
    from service.settings import Settings
    from worker.runner import HandlerResult, run_job

    def allocate(ctx):
        chunks = []
        while True:
            chunks.append(bytearray(32 << 20))
            chunks[-1][::4096] = b"x" * len(range(0, 32 << 20, 4096))

    settings = Settings(data_dir=sys.argv[1], job_memory_limit_bytes=int(sys.argv[3]))
    db = Database.connect(settings.database_url)
    outcome = run_job(sys.argv[2], settings=settings, db=db, handlers={"generate_dataset": allocate},
                      contained=True)
    status = open("/proc/self/status").read().splitlines()
    peak_kib = int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
    print(json.dumps({"outcome": outcome, "peak_rss": peak_kib * 1024}))
    """
)


def test_a_process_allocating_as_fast_as_it_can_stops_at_its_limit(db, settings):
    job_id = queue_job(db)
    limit = 256 << 20
    done = subprocess.run(
        [sys.executable, "-c", _ALLOCATING_JOB, str(settings.data_dir), job_id, str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["outcome"] == "failed"
    # Resident memory also counts the interpreter's mapped files, which the data limit does not.
    assert limit // 2 < result["peak_rss"] <= limit + (64 << 20), result
    job, resource = state(db, job_id)
    assert (job.state, job.attempt, job.error) == ("failed", 1, "exceeded the memory limit of 0.25 GiB")
    assert resource.error == job.error
    assert not list(settings.scratch_dir.iterdir())


def test_torch_refusing_an_allocation_fails_the_job_with_the_limit_of_its_estimate(db, settings):
    """torch words a refused allocation as a RuntimeError; a job with an estimate is limited to the estimate
    plus the allowance, under the cap."""
    job_id = queue_job(db)
    with db.write_session() as session:
        session.get(Job, job_id).estimate = {"memory_bytes": 1 << 30}
    settings = settings.model_copy(
        update={"job_memory_allowance_bytes": 1 << 29, "job_memory_limit_bytes": 8 << 30}
    )

    def refused(ctx):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
            "tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"
        )

    assert run_job(job_id, settings=settings, db=db, handlers={"generate_dataset": refused}) == "failed"
    job, resource = state(db, job_id)
    assert (job.error, job.attempt, resource.status) == ("exceeded the memory limit of 1.5 GiB", 1, "failed")


def test_the_limit_is_the_estimate_plus_the_allowance_under_the_cap(settings):
    capped = settings.model_copy(
        update={"job_memory_limit_bytes": 4 << 30, "job_memory_allowance_bytes": 1 << 30}
    )
    assert capped.job_memory_limit(None) == 4 << 30  # no estimate: the cap
    assert capped.job_memory_limit(1 << 30) == 2 << 30
    assert capped.job_memory_limit(16 << 30) == 4 << 30
    assert memory_limit.error(3 << 29) == "exceeded the memory limit of 1.5 GiB"
    assert memory_limit.error(4 << 30) == "exceeded the memory limit of 4 GiB"
