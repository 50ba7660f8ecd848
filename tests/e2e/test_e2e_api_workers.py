"""Scaled mode with several API processes (SBAUDIT_API_WORKERS): each builds the app from the environment,
listens on a socket of its own (SO_REUSEPORT) and shares PostgreSQL and Redis; a job created through one is
finished by a `sbaudit worker`; one that dies is replaced. /metrics adds up the requests of every process,
those of the one that died included."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
from e2e_flows import TINY_LMS5, create, ready
from e2e_support import private_database, start_server


def _listening_sockets(port: int) -> int:
    """LISTEN entries for ``port`` in the kernel's TCP table (IPv4)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A")


def _api_processes(parent: int) -> list[int]:
    found = []
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text():
                found.append(int(pid))
        except FileNotFoundError:  # reaped since the list was read
            pass
    return found


def _healthz_count(base_url: str) -> float:
    """sbaudit_http_requests_total for GET /healthz, as one scrape (new connection) of /metrics reports it."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    found = re.search(
        r'^sbaudit_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


def _eventually(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_api_processes_serve_one_deployment(tmp_path, redis_url):
    with private_database() as database_url:
        _serve_with_two_processes(tmp_path, database_url, redis_url)


def _serve_with_two_processes(tmp_path, database_url: str, redis_url: str) -> None:
    server = start_server(
        tmp_path, SBAUDIT_DATABASE_URL=database_url, SBAUDIT_BROKER_URL=redis_url, SBAUDIT_API_WORKERS="2"
    )
    try:
        assert "2 API processes" in server.proc.output()
        server.start_worker(tmp_path)
        with server.client() as client:
            dataset = ready(client, "datasets", create(client, "/v1/datasets", {**TINY_LMS5, "seed": 77}))
            statuses = {client.get(f"/v1/datasets/{dataset['id']}").status_code for _ in range(40)}
            assert statuses == {200}
            assert client.get("/readyz").json()["status"] == "ready"
            metrics = client.get("/metrics").text
        # The dataset job ran in the worker: its run time is in the histogram, read from the database.
        assert re.search(
            r'^sbaudit_job_duration_seconds_count\{kind="generate_dataset",outcome="succeeded"\} 1\.0$',
            metrics,
            re.M,
        ), metrics

        # 30 requests on 30 connections: the kernel spreads them over both processes, and every scrape, which
        # ever process answers it, counts all 30.
        for _ in range(30):
            assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
        assert [_healthz_count(server.base_url) for _ in range(6)] == [30.0] * 6

        port = int(server.base_url.rsplit(":", 1)[1])
        processes = _api_processes(server.proc.process.pid)
        assert len(processes) == 2 and _listening_sockets(port) == 2, "each API process has its own socket"
        os.kill(processes[0], signal.SIGKILL)

        def replaced() -> bool:
            now = _api_processes(server.proc.process.pid)
            return processes[0] not in now and len(now) == 2 and _listening_sockets(port) == 2

        _eventually(replaced)
        with server.client() as client:
            assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 200
        assert "starting another" in server.proc.output()
        assert _healthz_count(server.base_url) == 30.0, "the killed process' requests are still counted"
    finally:
        for worker in server.workers:
            worker.stop()
        server.proc.stop()
