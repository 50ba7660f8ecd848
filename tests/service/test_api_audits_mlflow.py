"""The audit body's ``mlflow`` field: refused (422 naming it) by a server that logs no audits to MLflow;
on one that does, where each audit's run goes is resolved at creation, stored with the job for the worker and
shown on the audit."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_testing import fields, problem

from service.models import Job


@pytest.fixture
def tracking_client(settings, db):
    """The API of a server with SBAUDIT_MLFLOW_TRACKING_URI set (nothing is contacted at creation)."""
    from sbserver.wiring import upload_validator_program
    from service.app import create_app

    tracked = settings.model_copy(
        update={"mlflow_tracking_uri": "http://127.0.0.1:9/", "mlflow_experiment": "team-audits"}
    )
    with TestClient(create_app(tracked, db=db, upload_validator=upload_validator_program())) as client:
        yield client


def test_a_server_without_mlflow_refuses_an_audit_that_asks_for_it(client, auth, ready_model):
    body = {"model_id": ready_model(), "mlflow": {"experiment": "ci"}}
    response = client.post("/v1/audits", json=body, headers=auth)
    assert fields(response) == ["body.mlflow"]
    assert "SBAUDIT_MLFLOW_TRACKING_URI" in problem(response, 422)["detail"]
    plain = client.post("/v1/audits", json={"model_id": body["model_id"]}, headers=auth)
    assert plain.status_code == 202 and plain.json()["mlflow"] is None


def test_every_audit_gets_a_run_target_on_a_tracking_server(tracking_client, auth, db, ready_model):
    model_id = ready_model()
    default = tracking_client.post("/v1/audits", json={"model_id": model_id}, headers=auth).json()
    assert default["mlflow"] == {
        "experiment": "team-audits",
        "run_name": default["id"],
        "run_id": None,
        "experiment_id": None,
        "run_url": None,
        "error": None,
    }
    named = tracking_client.post(
        "/v1/audits", json={"model_id": model_id, "name": "nightly", "mlflow": {}}, headers=auth
    ).json()
    assert (named["mlflow"]["experiment"], named["mlflow"]["run_name"]) == ("team-audits", "nightly")
    chosen = tracking_client.post(
        "/v1/audits",
        json={"model_id": model_id, "name": "x", "mlflow": {"experiment": "ci", "run_name": "pr-17"}},
        headers=auth,
    ).json()
    assert (chosen["mlflow"]["experiment"], chosen["mlflow"]["run_name"]) == ("ci", "pr-17")
    shown = tracking_client.get(f"/v1/audits/{chosen['id']}", headers=auth).json()
    assert shown["mlflow"] == chosen["mlflow"]
    with db.read_session() as session:  # what the worker reads
        assert session.get(Job, chosen["job_id"]).params["mlflow"] == {
            "experiment": "ci",
            "run_name": "pr-17",
        }


def test_mlflow_field_errors(tracking_client, auth, ready_model):
    model_id = ready_model()
    cases = [
        ({"experiment": ""}, "body.mlflow.experiment"),
        ({"experiment": "x" * 257}, "body.mlflow.experiment"),
        ({"run_name": 5}, "body.mlflow.run_name"),
        ({"tracking_uri": "http://elsewhere"}, "body.mlflow.tracking_uri"),
        ("ci", "body.mlflow"),
    ]
    for mlflow, field in cases:
        response = tracking_client.post(
            "/v1/audits", json={"model_id": model_id, "mlflow": mlflow}, headers=auth
        )
        assert field in fields(response), (mlflow, response.text)
