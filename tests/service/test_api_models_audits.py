"""POST /v1/models and /v1/audits: inputs must exist, belong to the caller and fit (tests/service/
test_job_dependencies.py: inputs that are not ready yet)."""

from __future__ import annotations

from service_testing import LMS5_DESCRIPTION, fields, problem


def test_create_model_stores_the_resolved_config(client, auth, ready_dataset):
    dataset_id = ready_dataset()
    body = {
        "dataset_id": dataset_id,
        "architecture": {"name": "fcn", "width": 100, "depth": 2},
        "training": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-5, "batch_size": 256,
                     "stop": {"train_accuracy": 0.9999}},
        "seed": 0,
    }  # fmt: skip
    response = client.post("/v1/models", json=body, headers=auth)
    assert response.status_code == 202, response.text
    model = response.json()
    assert model["id"].startswith("mdl_") and model["status"] == "queued"
    assert model["architecture"]["activation"] == "relu"  # defaults filled in, as the engine will build it
    assert model["training"]["stop"] == {
        "train_accuracy": 0.9999,
        "train_loss": None,
        "max_updates": 100000,
        "max_epochs": None,
        "patience_updates": 0,
    }
    assert model["input_shape"] == [50]
    job = client.get(f"/v1/jobs/{model['job_id']}", headers=auth).json()
    assert job["kind"] == "train_model"


def test_model_request_errors(client, auth, db, ready_dataset):
    dataset_id = ready_dataset()
    base = {"dataset_id": dataset_id, "architecture": {"name": "fcn"}}
    cases = [
        ({**base, "architecture": {"name": "transformer"}}, "body.architecture"),
        ({**base, "architecture": {"name": "fcn", "width": 0}}, "body.architecture.width"),
        ({**base, "architecture": {"name": "fcn", "kernel": 3}}, "body.architecture.kernel"),
        ({**base, "architecture": {"name": "cnn1d", "kernel": 4}}, "body.architecture.kernel"),
        ({**base, "architecture": {"name": "resnet18"}}, "body.architecture.name"),
        ({**base, "architecture": {"name": "gru", "step_features": 7}}, "body.architecture.step_features"),
        ({**base, "training": {"optimizer": "lbfgs"}}, "body.training.optimizer"),
        ({**base, "training": {"lr": 0}}, "body.training.lr"),
        ({**base, "training": {"stop": {"max_updates": 0}}}, "body.training.stop.max_updates"),
        ({**base, "training": {"stop": {"accuracy": 1}}}, "body.training.stop.accuracy"),
        ({"architecture": {"name": "fcn"}}, "body.dataset_id"),
    ]
    for body, field in cases:
        assert field in fields(client.post("/v1/models", json=body, headers=auth)), body


def test_model_needs_an_existing_dataset(client, auth, db):
    missing = {"dataset_id": "ds_AAAAAAAAAAAAAAAA", "architecture": {"name": "fcn"}}
    problem(client.post("/v1/models", json=missing, headers=auth), 404)


def test_create_audit(client, auth, ready_model):
    model_id = ready_model()
    body = {"model_id": model_id, "checks": ["randomization", "feature_dependence"], "simple_blocks": [0]}
    response = client.post("/v1/audits", json=body, headers=auth)
    assert response.status_code == 202, response.text
    audit = response.json()
    assert audit["id"].startswith("aud_") and audit["status"] == "queued"
    assert audit["checks"] == ["randomization", "feature_dependence"] and audit["repeats"] == 5
    job = client.get(f"/v1/jobs/{audit['job_id']}", headers=auth).json()
    assert job["kind"] == "run_audit"


def test_audit_request_errors(client, auth, ready_model, ready_dataset):
    model_id = ready_model()
    cases = [
        ({"model_id": model_id, "checks": ["astrology"]}, "body.checks.0"),
        ({"model_id": model_id, "checks": []}, "body.checks"),
        ({"model_id": model_id, "checks": ["randomization", "randomization"]}, "body.checks"),
        ({"model_id": model_id, "simple_blocks": [2]}, "body.simple_blocks.0"),
        ({"model_id": model_id, "repeats": 0}, "body.repeats"),
        ({"model_id": model_id, "repeats": 10_000}, "body.repeats"),
        ({"model_id": model_id, "split": "holdout"}, "body.split"),
    ]
    for body, field in cases:
        assert field in fields(client.post("/v1/audits", json=body, headers=auth)), body
    wider = ready_dataset(description={**LMS5_DESCRIPTION, "input_shape": [20]})
    assert "body.dataset_id" in fields(
        client.post("/v1/audits", json={"model_id": model_id, "dataset_id": wider}, headers=auth)
    )
