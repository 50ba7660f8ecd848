"""A database the API cannot reach (restarting, failing over) answers 503 problem+json with Retry-After,
never a 500: the client retries, and the connection pool recovers by itself."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import Database
from service.settings import Settings

UNREACHABLE = "postgresql+psycopg://sbaudit@127.0.0.1:1/sbaudit"  # nothing listens on port 1


@pytest.fixture
def unreachable(tmp_path, clean_env):
    settings = Settings(data_dir=tmp_path / "data", database_url=UNREACHABLE)
    db = Database.connect(settings.database_url)
    with TestClient(create_app(settings, db=db), raise_server_exceptions=False) as client:
        yield client
    db.dispose()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/v1/jobs", None), ("GET", "/v1/jobs/job_AAAAAAAAAAAAAAAA", None),
     ("POST", "/v1/datasets", {"preset": "LMS-5"})],
)  # fmt: skip
def test_requests_answer_503_with_retry_after(unreachable, method, path, body):
    response = unreachable.request(method, path, json=body, headers={"Authorization": "Bearer sbk_anything"})
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    problem = response.json()
    assert problem["type"] == "urn:sbaudit:problem:database-unavailable"
    assert "Traceback" not in response.text and "psycopg" not in problem["detail"]


def test_readiness_fails_but_liveness_holds(unreachable):
    assert unreachable.get("/healthz").status_code == 200
    response = unreachable.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("database unreachable")
