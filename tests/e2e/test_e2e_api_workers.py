"""Scaled mode with several API processes (SBAUDIT_API_WORKERS): uvicorn workers each build the app from the
environment and share PostgreSQL and Redis; a job created through one is finished by a `sbaudit worker`."""

from __future__ import annotations

from e2e_flows import TINY_LMS5, create, ready
from e2e_support import private_database, start_server


def test_two_api_processes_serve_one_deployment(tmp_path, redis_url):
    with private_database() as database_url:
        _serve_with_two_processes(tmp_path, database_url, redis_url)


def _serve_with_two_processes(tmp_path, database_url: str, redis_url: str) -> None:
    server = start_server(tmp_path, SBAUDIT_DATABASE_URL=database_url, SBAUDIT_BROKER_URL=redis_url,
                          SBAUDIT_API_WORKERS="2")
    try:
        assert "2 API processes" in server.proc.output()
        server.start_worker(tmp_path)
        with server.client() as client:
            dataset = ready(client, "datasets", create(client, "/v1/datasets", {**TINY_LMS5, "seed": 77}))
            statuses = {client.get(f"/v1/datasets/{dataset['id']}").status_code for _ in range(40)}
            assert statuses == {200}
            assert client.get("/readyz").json()["status"] == "ready"
    finally:
        for worker in server.workers:
            worker.stop()
        server.proc.stop()
