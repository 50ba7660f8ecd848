"""Faults in scaled mode (PostgreSQL + Redis + `sbaudit worker` processes): a worker killed during an audit
or while writing artifacts, a dead worker's job canceled, Redis and PostgreSQL restarted, the API restarted.

Each job still ends exactly once (one resource, one artifact row per kind, no orphaned blob or scratch
dir), and a client polling meanwhile sees 2xx, 503 problem+json or a connection error, never a 500. The
module runs its own Redis (which it kills) and reaches PostgreSQL through a proxy (which it cuts).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from e2e_flows import (
    INTERRUPTIBLE_UPDATES,
    SMALL_LMS5,
    TINY_LMS5,
    create,
    long_training,
    ready,
    wait_until_training,
)
from e2e_support import (
    PG_ADMIN_URL,
    Proc,
    Server,
    private_database,
    require_server,
    start,
    start_server,
    wait_for_job,
)
from faults_support import (
    Poller,
    PrivateRedis,
    TcpProxy,
    assert_nothing_left_behind,
    assert_recorded_once,
    restart_api,
    wait_for_file,
)

from worker.faults import marker_path

MODEL_KINDS = ["history", "training_curves", "weights"]


@dataclass
class Cluster:
    server: Server
    redis: PrivateRedis
    proxy: TcpProxy
    tmp: Path
    dataset: dict

    def client(self) -> httpx.Client:
        return self.server.client()

    def poller(self, job_id: str) -> Poller:
        return Poller(self.server.base_url, self.server.key, job_id)

    def kill_workers(self) -> None:
        while self.server.workers:
            self.server.workers.pop().kill_group(signal.SIGKILL)

    def start_worker(self, **env: str) -> Proc:
        log = self.tmp / f"worker-{time.monotonic_ns()}.log"
        worker = start(["worker"], {**self.server.env, **env}, log, self.tmp)
        worker.wait_for_output("ready.", timeout=90)
        self.server.workers.append(worker)
        return worker


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    require_server("PostgreSQL", PG_ADMIN_URL, 5432)
    tmp = tmp_path_factory.mktemp("faults-scaled")
    redis = PrivateRedis(tmp)
    redis.start()
    pg = urlsplit(PG_ADMIN_URL)
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    proxy.start()
    server = None
    try:
        with private_database() as url:
            server = start_server(
                tmp,
                SBAUDIT_DATABASE_URL=proxy.via(url),
                SBAUDIT_BROKER_URL=redis.url,
                SBAUDIT_REDISPATCH_AFTER_SECONDS="2",
            )
            server.start_worker(tmp)
            with server.client() as client:
                dataset = ready(
                    client, "datasets", create(client, "/v1/datasets", {**SMALL_LMS5, "seed": 21})
                )
            yield Cluster(server, redis, proxy, tmp, dataset)
            for worker in server.workers:
                worker.stop()
            server.proc.stop()
    finally:
        if server is not None:
            for worker in server.workers:
                worker.kill_group()
            server.proc.kill_group()
        proxy.close()
        redis.kill()


def train(client: httpx.Client, cluster: Cluster, max_updates: int) -> dict:
    return long_training(client, cluster.dataset["id"], max_updates=max_updates)


def test_a_worker_killed_during_an_audit_is_replaced_and_the_audit_recorded_once(cluster):
    with cluster.client() as client:
        model = ready(client, "models", train(client, cluster, max_updates=100))
        audit = create(client, "/v1/audits", {
            "model_id": model["id"], "checks": ["randomization", "uap"], "repeats": 5,
            "options": {"uap": {"steps": 20, "epochs": 40}}})  # fmt: skip
        deadline = time.monotonic() + 120
        while (job := client.get(f"/v1/jobs/{audit['job_id']}").json())["progress"] <= 0.05:
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.1)
        with cluster.poller(audit["job_id"]):
            cluster.kill_workers()
            cluster.start_worker()
            job = wait_for_job(client, audit["job_id"])
        assert job["state"] == "succeeded" and job["attempt"] == 2, job
        final = assert_recorded_once(client, "audits", audit)
        assert set(final["results"]) == {"randomization", "uap"}
        assert_nothing_left_behind(cluster.server, client, audit["job_id"])


def test_a_worker_killed_while_writing_artifacts_leaves_no_orphans(cluster):
    cluster.kill_workers()
    paused = cluster.start_worker(SBAUDIT_FAULT_PAUSE="mid_artifacts:300")
    with cluster.client() as client:
        model = train(client, cluster, max_updates=300)
        marker = marker_path(cluster.server.data_dir, "mid_artifacts", model["job_id"])
        wait_for_file(marker, timeout=120, watch=paused)
        with cluster.poller(model["job_id"]):
            cluster.kill_workers()  # the blobs are in the store, their rows not committed
            cluster.start_worker()
            job = wait_for_job(client, model["job_id"])
        assert job["state"] == "succeeded" and job["attempt"] == 2, job
        final = assert_recorded_once(client, "models", model, MODEL_KINDS)
        assert final["result"]["updates"] == 300
        assert_nothing_left_behind(cluster.server, client, model["job_id"])


def test_a_job_canceled_while_its_worker_is_dead_ends_canceled(cluster):
    with cluster.client() as client:
        model = train(client, cluster, max_updates=1_000_000)
        wait_until_training(client, model["job_id"])
        with cluster.poller(model["job_id"]):
            cluster.kill_workers()  # no worker left: nobody reaps until one starts
            response = client.post(f"/v1/jobs/{model['job_id']}/cancel")
            assert response.status_code == 202 and response.json()["state"] == "canceling", response.text
            time.sleep(6)  # the lease (5 s) runs out meanwhile
            assert client.get(f"/v1/jobs/{model['job_id']}").json()["state"] == "canceling"
            cluster.start_worker()
            job = wait_for_job(client, model["job_id"], timeout=60)
        assert job["state"] == "canceled" and job["attempt"] == 1, job
        time.sleep(3)  # a few reaper passes later it has not come back to life
        job = client.get(f"/v1/jobs/{model['job_id']}").json()
        assert job["state"] == "canceled" and job["attempt"] == 1, job
        final = client.get(f"/v1/models/{model['id']}").json()
        assert final["status"] == "canceled" and final["artifacts"] == []
        assert_nothing_left_behind(cluster.server, client, model["job_id"])


def test_redis_restarted_with_jobs_queued_and_running(cluster):
    with cluster.client() as client:
        running = train(client, cluster, max_updates=INTERRUPTIBLE_UPDATES)
        wait_until_training(client, running["job_id"])
        queued = [create(client, "/v1/datasets", {**TINY_LMS5, "seed": 30 + i}) for i in range(2)]
        with cluster.poller(running["job_id"]):
            cluster.redis.kill()
            # The API keeps answering: a job created now is queued and sent once Redis is back.
            during = create(client, "/v1/datasets", {**TINY_LMS5, "seed": 40})
            assert client.get(f"/v1/jobs/{during['job_id']}").json()["state"] == "queued"
            doomed = create(client, "/v1/datasets", {**TINY_LMS5, "seed": 41})
            canceled = client.post(f"/v1/jobs/{doomed['job_id']}/cancel")
            assert canceled.status_code == 202 and canceled.json()["state"] == "canceled", canceled.text
            readiness = client.get("/readyz")
            assert readiness.status_code == 503 and readiness.json()["checks"]["broker"] != "ok"
            time.sleep(2)
            cluster.redis.start()  # empty: every message that was waiting in it is gone
            for created in [running, *queued, during]:
                job = wait_for_job(client, created["job_id"], timeout=180)
                assert job["state"] == "succeeded", job
        assert client.get(f"/v1/jobs/{doomed['job_id']}").json()["state"] == "canceled"
        assert client.get("/readyz").status_code == 200
        assert_recorded_once(client, "models", running, MODEL_KINDS)
        for created in [*queued, during]:
            assert_recorded_once(client, "datasets", created)
            assert_nothing_left_behind(cluster.server, client, created["job_id"])


def test_postgres_restarted_while_the_api_serves_and_workers_heartbeat(cluster):
    with cluster.client() as client:
        model = train(client, cluster, max_updates=INTERRUPTIBLE_UPDATES)
        wait_until_training(client, model["job_id"])
        with cluster.poller(model["job_id"]) as poller:
            cluster.proxy.cut()
            try:
                time.sleep(0.5)
                response = client.get(f"/v1/jobs/{model['job_id']}")
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert int(response.headers["retry-after"]) > 0
                posted = client.post("/v1/datasets", json={**TINY_LMS5, "seed": 50})
                assert posted.status_code == 503, posted.text
                assert client.get("/readyz").json()["checks"]["database"] != "ok"
                time.sleep(6)  # longer than the lease: the job may be re-queued, never recorded twice
            finally:
                cluster.proxy.restore()
            assert client.get(f"/v1/jobs/{model['job_id']}").status_code == 200, "recovered without restart"
            job = wait_for_job(client, model["job_id"], timeout=180)
        assert "503" in poller.statuses("/v1/jobs/")
        assert job["state"] == "succeeded", job
        final = assert_recorded_once(client, "models", model, MODEL_KINDS)
        assert final["result"]["updates"] == INTERRUPTIBLE_UPDATES
        assert client.get("/readyz").status_code == 200
        assert_nothing_left_behind(cluster.server, client, model["job_id"])


def test_an_api_restart_does_not_disturb_workers(cluster):
    with cluster.client() as client:
        model = train(client, cluster, max_updates=INTERRUPTIBLE_UPDATES)
        wait_until_training(client, model["job_id"])
        with cluster.poller(model["job_id"]):
            restart_api(cluster.server, cluster.tmp)
        job = wait_for_job(client, model["job_id"])
        assert job["state"] == "succeeded" and job["attempt"] == 1, job
        assert_recorded_once(client, "models", model, MODEL_KINDS)
