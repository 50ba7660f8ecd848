"""DELETE /v1/{datasets,models,audits}/{id}: only finished, unused resources; blobs no one else uses go."""

from __future__ import annotations

import os
import time

from service_testing import problem

from service.ids import new_id
from service.models import Artifact
from service.storage import ArtifactStore


def add_artifact(db, settings, resource_id, content: bytes, *, age: float = 3600) -> str:
    blob = ArtifactStore(settings.artifacts_dir).put_bytes(content)
    path = ArtifactStore(settings.artifacts_dir).path_for(blob.sha256)
    old = time.time() - age
    os.utime(path, (old, old))
    with db.write_session() as session:
        session.add(Artifact(id=new_id("artifact"), owner="alice", resource_id=resource_id, kind="arrays",
                             sha256=blob.sha256, size=blob.size, content_type="application/octet-stream",
                             filename="x.npz"))  # fmt: skip
    return path


def test_delete_removes_rows_and_unshared_blobs(client, auth, db, settings, ready_dataset):
    keep, drop = ready_dataset(), ready_dataset()
    shared_path = add_artifact(db, settings, keep, b"shared")
    add_artifact(db, settings, drop, b"shared")
    own_path = add_artifact(db, settings, drop, b"only mine")
    assert client.delete(f"/v1/datasets/{drop}", headers=auth).status_code == 204
    problem(client.get(f"/v1/datasets/{drop}", headers=auth), 404)
    assert not own_path.exists() and shared_path.exists()
    assert len(client.get(f"/v1/datasets/{keep}", headers=auth).json()["artifacts"]) == 1
    problem(client.delete(f"/v1/datasets/{drop}", headers=auth), 404)


def test_recently_stored_blobs_are_kept(client, auth, db, settings, ready_dataset):
    dataset_id = ready_dataset()
    path = add_artifact(db, settings, dataset_id, b"just written", age=0)
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 204
    assert path.exists(), "a job may be committing a row for this content right now"


def test_cannot_delete_what_is_running_or_in_use(client, auth, other_auth, ready_dataset, ready_model):
    queued = client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth).json()
    assert "cancel" in problem(client.delete(f"/v1/datasets/{queued['id']}", headers=auth), 409)["detail"]
    client.post(f"/v1/jobs/{queued['job_id']}/cancel", headers=auth)
    assert client.delete(f"/v1/datasets/{queued['id']}", headers=auth).status_code == 204

    model_id = ready_model()
    dataset_id = client.get(f"/v1/models/{model_id}", headers=auth).json()["dataset_id"]
    assert model_id in problem(client.delete(f"/v1/datasets/{dataset_id}", headers=auth), 409)["detail"]
    problem(client.delete(f"/v1/models/{model_id}", headers=other_auth), 404)
    audit = client.post("/v1/audits", json={"model_id": model_id}, headers=auth).json()
    problem(client.delete(f"/v1/models/{model_id}", headers=auth), 409)
    client.post(f"/v1/jobs/{audit['job_id']}/cancel", headers=auth)
    assert client.delete(f"/v1/audits/{audit['id']}", headers=auth).status_code == 204
    assert client.delete(f"/v1/models/{model_id}", headers=auth).status_code == 204
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=auth).status_code == 204
