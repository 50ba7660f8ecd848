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


def test_metrics_job_duration_histogram_by_kind_and_outcome(client, db):
    from datetime import timedelta

    from service.models import Job, utcnow

    start = utcnow()
    runs = [("train", "succeeded", 3.0), ("train", "succeeded", 40.0), ("train", "failed", 700.0),
            ("audit", "succeeded", 0.5), ("audit", "running", None), ("audit", "canceled", None)]  # fmt: skip
    with db.write_session() as session:
        for number, (kind, state, seconds) in enumerate(runs):
            started = start if seconds is not None or state == "running" else None
            finished = start + timedelta(seconds=seconds) if seconds is not None else None
            session.add(Job(
                id=f"job_{number:016d}", owner="alice", kind=kind, state=state, resource_type="model",
                resource_id=f"m_{number}", params={}, started_at=started, finished_at=finished))  # fmt: skip
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (sample.name, sample.labels["kind"], sample.labels["outcome"], sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        if family.name == "sbaudit_job_duration_seconds"
        for sample in family.samples
    }
    bucket = "sbaudit_job_duration_seconds_bucket"
    assert samples[(bucket, "train", "succeeded", "1.0")] == 0
    assert samples[(bucket, "train", "succeeded", "5.0")] == 1
    assert samples[(bucket, "train", "succeeded", "60.0")] == 2
    assert samples[(bucket, "train", "succeeded", "+Inf")] == 2
    assert samples[("sbaudit_job_duration_seconds_count", "train", "succeeded", None)] == 2
    assert abs(samples[("sbaudit_job_duration_seconds_sum", "train", "succeeded", None)] - 43.0) < 0.01
    assert samples[(bucket, "train", "failed", "600.0")] == 0
    assert samples[(bucket, "train", "failed", "1800.0")] == 1
    assert samples[(bucket, "audit", "succeeded", "1.0")] == 1
    outcomes = {outcome for _, _, outcome, _ in samples}
    assert outcomes == {"succeeded", "failed"}, outcomes  # running: not ended; canceled before it started


def test_openapi_documents_the_contract(app):
    spec = app.openapi()
    paths = spec["paths"]
    for path in ("/v1/datasets", "/v1/models", "/v1/audits", "/v1/jobs", "/v1/jobs/{job_id}/cancel",
                 "/v1/artifacts/{artifact_id}", "/healthz", "/readyz", "/metrics"):  # fmt: skip
        assert path in paths, path
    assert "202" in paths["/v1/datasets"]["post"]["responses"]
    params = [p["name"] for p in paths["/v1/datasets"]["post"]["parameters"]]
    assert "Idempotency-Key" in params
