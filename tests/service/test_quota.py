"""Storage quota per owner: usage counts distinct blobs, an owner at the quota gets 507 (quota-exceeded) on
every route that would store more and no job is created, an upload is cut off while streaming, and
GET /v1/usage reports the same numbers."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from service_testing import problem
from sqlalchemy import func, select
from upload_testing import assert_nothing_left, stored_files, upload_model

from sbserver.wiring import upload_validator_program
from service.app import create_app
from service.ids import new_id
from service.models import Artifact, Job
from service.quota import UsageGate

LMS5 = {"preset": "LMS-5", "n_train": 100, "n_val": 10, "n_test": 10, "seed": 0}
QUOTA = 1000


def add_artifact(db, owner: str, size: int, content: str) -> None:
    """An artifact row of ``size`` bytes whose blob is identified by ``content``."""
    with db.write_session() as session:
        session.add(
            Artifact(
                id=new_id("artifact"),
                owner=owner,
                resource_id=new_id("dataset"),
                kind="arrays",
                sha256=hashlib.sha256(content.encode()).hexdigest(),
                size=size,
                content_type="application/octet-stream",
                filename="a.npz",
            )
        )


def job_count(db, owner: str) -> int:
    with db.read_session() as session:
        return session.scalar(select(func.count()).select_from(Job).where(Job.owner == owner))


@pytest.fixture
def quota_client(settings, db):
    with TestClient(
        create_app(
            settings.model_copy(update={"owner_quota_bytes": QUOTA}),
            db=db,
            upload_validator=upload_validator_program(),
        )
    ) as client:
        yield client


def test_usage_counts_each_blob_once(quota_client, db, auth, ready_model):
    ready_model("alice")
    add_artifact(db, "alice", 600, "weights")
    add_artifact(db, "alice", 600, "weights")  # the same blob referenced twice
    add_artifact(db, "alice", 300, "plot")
    add_artifact(db, "bob", 5000, "bob's")
    usage = quota_client.get("/v1/usage", headers=auth).json()
    assert usage == {
        "owner": "alice",
        "bytes_used": 900,
        "quota_bytes": QUOTA,
        "bytes_left": 100,
        "counts": {"datasets": 1, "models": 1, "audits": 0, "artifacts": 3, "active_jobs": 0},
    }


def test_at_the_quota_creating_anything_is_507_and_no_job_is_created(
    quota_client, db, auth, other_auth, ready_model
):
    model_id = ready_model("alice")
    add_artifact(db, "alice", 900, "weights")
    assert quota_client.post("/v1/datasets", json=LMS5, headers=auth).status_code == 202  # 900 < 1000
    add_artifact(db, "alice", 100, "plot")
    jobs_before = job_count(db, "alice")

    body = problem(quota_client.post("/v1/datasets", json={**LMS5, "seed": 1}, headers=auth), 507)
    assert body["type"] == "urn:sbaudit:problem:quota-exceeded"
    assert body["usage_bytes"] == 1000 and body["quota_bytes"] == QUOTA
    assert "1000 bytes of your 1000-byte storage quota" in body["detail"]
    training = {"optimizer": "sgd", "lr": 0.1, "batch_size": 32, "stop": {"max_updates": 10}}
    problem(quota_client.post("/v1/models", headers=auth, json={
        "dataset_id": "ds_AAAAAAAAAAAAAAAA", "architecture": {"name": "fcn", "width": 10, "depth": 1},
        "training": training}), 507)  # fmt: skip
    problem(quota_client.post("/v1/audits", json={"model_id": model_id, "checks": ["randomization"]},
                              headers=auth), 507)  # fmt: skip
    assert job_count(db, "alice") == jobs_before
    usage = quota_client.get("/v1/usage", headers=auth).json()
    assert usage["bytes_used"] == 1000 and usage["bytes_left"] == 0
    # Another owner is not affected.
    assert quota_client.post("/v1/datasets", json=LMS5, headers=other_auth).status_code == 202


def test_a_replay_is_answered_even_over_the_quota(quota_client, db, auth):
    first = quota_client.post("/v1/datasets", json=LMS5, headers={**auth, "Idempotency-Key": "k1"})
    assert first.status_code == 202
    add_artifact(db, "alice", 5000, "big")
    quota_client.app.state.usage_gate = UsageGate(ttl=0)  # see the next test for the gate's slack
    replay = quota_client.post("/v1/datasets", json=LMS5, headers={**auth, "Idempotency-Key": "k1"})
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    problem(quota_client.post("/v1/datasets", json=LMS5, headers={**auth, "Idempotency-Key": "k2"}), 507)


def test_owners_well_under_the_quota_skip_the_sum_for_a_while_and_near_it_never(quota_client, db, auth):
    gate = quota_client.app.state.usage_gate = UsageGate(ttl=3600)
    assert quota_client.post("/v1/datasets", json=LMS5, headers=auth).status_code == 202  # 0 of 1000: cleared
    add_artifact(db, "alice", 5000, "big")
    assert quota_client.post("/v1/datasets", json=LMS5, headers=auth).status_code == 202  # within the slack
    gate._clear_until.clear()  # the ttl ran out
    problem(quota_client.post("/v1/datasets", json=LMS5, headers=auth), 507)
    # Near the quota (above 90 %) every request is checked: deleting frees room at once, filling it stops at
    # once.
    with db.write_session() as session:
        session.query(Artifact).filter(Artifact.owner == "alice").delete()
    add_artifact(db, "alice", 950, "nearly")
    assert quota_client.post("/v1/datasets", json=LMS5, headers=auth).status_code == 202
    add_artifact(db, "alice", 50, "full")
    problem(quota_client.post("/v1/datasets", json=LMS5, headers=auth), 507)


def test_an_upload_is_cut_off_when_it_would_pass_the_quota(quota_client, db, auth, settings):
    add_artifact(db, "alice", 900, "weights")
    before = stored_files(settings)
    response = upload_model(quota_client, auth, b"\0" * 5000)
    body = problem(response, 507)
    assert "this upload would take your storage to more than" in body["detail"]
    assert body["usage_bytes"] == 900
    assert_nothing_left(settings, before)
    # At the quota, an upload is refused before its body is read.
    add_artifact(db, "alice", 100, "plot")
    problem(upload_model(quota_client, auth, b"\0" * 10), 507)
    problem(quota_client.post("/v1/datasets/uploads", headers=auth, files={"file": ("d.npz", b"x")}), 507)


def test_no_quota_means_unlimited(client, db, auth):
    add_artifact(db, "alice", 10**12, "huge")
    client.app.state.settings = client.app.state.settings.model_copy(update={"owner_quota_bytes": 0})
    assert client.post("/v1/datasets", json=LMS5, headers=auth).status_code == 202
    usage = client.get("/v1/usage", headers=auth).json()
    assert usage["bytes_used"] == 10**12 and usage["quota_bytes"] is None and usage["bytes_left"] is None


def test_usage_needs_a_key_and_is_in_the_schema(quota_client):
    problem(quota_client.get("/v1/usage"), 401)
    paths = quota_client.get("/openapi.json").json()["paths"]
    assert "UsageRead" in str(paths["/v1/usage"]["get"]["responses"]["200"])
    assert "507" in paths["/v1/datasets"]["post"]["responses"]
    assert "507" in paths["/v1/models/uploads"]["post"]["responses"]
