"""Health, readiness, metrics, OpenAPI."""

from __future__ import annotations

from service.settings import Settings


def test_readyz_reports_the_database(client):
    body = client.get("/readyz").json()
    assert body == {"status": "ready", "checks": {"database": "ok", "executor": "ok"}}


def test_readyz_fails_without_a_broker(tmp_path, clean_env, db):
    from fastapi.testclient import TestClient

    from service.app import create_app

    settings = Settings(data_dir=tmp_path / "data", broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings, db=db)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["checks"]["broker"].startswith("broker unreachable")


def test_metrics_count_requests_by_route_and_jobs_by_state(client, auth):
    client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth)
    client.get("/v1/datasets/ds_AAAAAAAAAAAAAAAA", headers=auth)
    text = client.get("/metrics").text
    assert 'sbaudit_jobs{state="queued"} 1.0' in text
    assert 'sbaudit_jobs{state="running"} 0.0' in text
    assert 'sbaudit_http_requests_total{method="POST",route="/v1/datasets",status="202"} 1.0' in text
    assert 'route="/v1/datasets/{dataset_id}",status="404"' in text
    assert "sbaudit_http_request_duration_seconds_bucket" in text


def test_openapi_documents_the_contract(app):
    spec = app.openapi()
    paths = spec["paths"]
    for path in ("/v1/datasets", "/v1/models", "/v1/audits", "/v1/jobs", "/v1/jobs/{job_id}/cancel",
                 "/v1/artifacts/{artifact_id}", "/healthz", "/readyz", "/metrics"):  # fmt: skip
        assert path in paths, path
    assert "202" in paths["/v1/datasets"]["post"]["responses"]
    params = [p["name"] for p in paths["/v1/datasets"]["post"]["parameters"]]
    assert "Idempotency-Key" in params
