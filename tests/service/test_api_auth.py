"""API keys: every /v1 route needs one; resources are scoped to the key's owner."""

from __future__ import annotations

import logging

import pytest

from service.auth import ensure_admin_key, hash_key

V1_ROUTES = [
    ("GET", "/v1/datasets"),
    ("POST", "/v1/datasets"),
    ("GET", "/v1/datasets/ds_xxxxxxxxxxxxxxxx"),
    ("GET", "/v1/models"),
    ("POST", "/v1/models"),
    ("GET", "/v1/audits"),
    ("POST", "/v1/audits"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/job_xxxxxxxxxxxxxxxx"),
    ("POST", "/v1/jobs/job_xxxxxxxxxxxxxxxx/cancel"),
    ("GET", "/v1/artifacts/art_xxxxxxxxxxxxxxxx"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/architectures"),
]


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_every_v1_route_requires_a_key(client, method, path):
    response = client.request(method, path, json={})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["status"] == 401


def test_every_v1_route_in_the_app_is_covered(app):
    covered = {path.split("/")[2] for _, path in V1_ROUTES}
    openapi = app.openapi()
    for path, operations in openapi["paths"].items():
        if path.startswith("/v1/"):
            assert path.split("/")[2] in covered, path
            for operation in operations.values():
                assert operation.get("security"), f"{path} is not marked as needing a key"


def test_wrong_key_and_wrong_scheme(client, auth):
    assert client.get("/v1/datasets", headers={"Authorization": "Bearer sbk_nope"}).status_code == 401
    token = auth["Authorization"].split()[1]
    assert client.get("/v1/datasets", headers={"Authorization": f"Basic {token}"}).status_code == 401
    assert client.get("/v1/datasets", headers=auth).status_code == 200


def test_unauthenticated_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_another_owners_resources_answer_404(client, auth, other_auth, ready_dataset, ready_model):
    dataset_id = ready_dataset("alice")
    model_id = ready_model("alice", dataset_id)
    assert client.get(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 200
    response = client.get(f"/v1/datasets/{dataset_id}", headers=other_auth)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get(f"/v1/models/{model_id}", headers=other_auth).status_code == 404
    assert client.get("/v1/datasets", headers=other_auth).json()["data"] == []
    # Bob cannot build on Alice's resources either.
    body = {"dataset_id": dataset_id, "architecture": {"name": "fcn"}}
    assert client.post("/v1/models", json=body, headers=other_auth).status_code == 404
    assert client.post("/v1/audits", json={"model_id": model_id}, headers=other_auth).status_code == 404
    # ...nor see or cancel the job behind Alice's dataset.
    created = client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth).json()
    assert client.get(f"/v1/jobs/{created['job_id']}", headers=other_auth).status_code == 404
    assert client.post(f"/v1/jobs/{created['job_id']}/cancel", headers=other_auth).status_code == 404
    assert client.get(f"/v1/jobs/{created['job_id']}", headers=auth).json()["state"] == "queued"


def test_keys_are_stored_hashed_and_never_logged(client, db, auth, caplog):
    caplog.set_level(logging.DEBUG)
    key = auth["Authorization"].split()[1]
    client.get("/v1/datasets", headers=auth)
    client.get("/v1/datasets", headers={"Authorization": "Bearer sbk_wrong"})
    assert key not in caplog.text
    with db.engine.connect() as conn:
        dump = "\n".join(str(row) for row in conn.exec_driver_sql("SELECT * FROM api_keys"))
    assert key not in dump
    assert hash_key(key) in dump


def test_admin_key_is_created_once_with_private_permissions(db, settings):
    key = ensure_admin_key(db, settings.admin_key_file)
    assert key and key.startswith("sbk_")
    assert settings.admin_key_file.read_text().strip() == key
    assert settings.admin_key_file.stat().st_mode & 0o777 == 0o600
    assert ensure_admin_key(db, settings.admin_key_file) is None
