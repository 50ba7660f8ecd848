"""POST /v1/models with a torchvision or timm network by name: the engine measures it at the dataset's input
shape and classes in the validator program (service/measured_cost.py) before the job is budgeted, so an
over-budget network is a 422 naming the limit and nothing is queued; a network the engine cannot build or
run on the dataset's inputs is a 422 on body.architecture; busy validators answer 503 as for uploads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from service import measured_cost
from service.models import Job, Model
from service.settings import Settings

RESNET18 = {"name": "torchvision", "model": "resnet18"}
IMAGES: dict[str, Any] = {
    "name": "images",
    "input_shape": [3, 40, 40],
    "num_classes": 3,
    "blocks": [{"name": "top", "kind": "region", "indices": [0], "bayes_accuracy": None, "params": {}}],
    "simple_blocks": [0],
    "sizes": {"train": 32, "val": 8, "test": 8},
    "rotated": False,
    "seed": 0,
    "spec": {"kind": "upload"},
}
TINY = {"batch_size": 8, "stop": {"max_updates": 2}}


@pytest.fixture(autouse=True)
def _fresh_cache():
    measured_cost._cache.clear()
    yield
    measured_cost._cache.clear()


@pytest.fixture
def settings(tmp_path, clean_env) -> Settings:
    return Settings(data_dir=tmp_path / "data", progress_interval_seconds=0.0, max_job_work=10**12)


def _train(client, auth, dataset_id: str, architecture: dict, training: dict | None = None):
    body = {"dataset_id": dataset_id, "architecture": architecture, "training": training or TINY}
    return client.post("/v1/models", headers=auth, json=body)


def _jobs(db) -> int:
    with db.read_session() as session:
        return session.query(Job).count()


def test_a_library_network_is_measured_budgeted_and_queued(client, auth, db, ready_dataset):
    dataset_id = ready_dataset(description=IMAGES)
    response = _train(client, auth, dataset_id, RESNET18)
    assert response.status_code == 202, response.text
    model = response.json()
    cost = model["result"]["cost"]
    # torchvision's resnet18 with a 3-class head: 11,176,512 + 512 x 3 + 3 parameters
    assert cost["parameters"] == 11_178_051 and cost["macs"] > 80_000_000
    with db.read_session() as session:
        job = session.get(Job, model["job_id"])
        assert job.params["cost"] == cost and job.params["architecture"] == RESNET18
        # budgeted on the measured figures: weights, gradients and a snapshot (plain SGD), float32
        weights = job.estimate["parts"]["memory_bytes"]["weights, gradients, optimizer state"]
        assert weights == (3 * cost["parameters"] + cost["buffers"]) * 4
        assert session.get(Model, model["id"]).result == {"cost": cost}

    # The figures are kept per (architecture, shape, classes): a resubmission does not start the program.
    client.app.state.upload_validator = ["/bin/false"]
    again = _train(client, auth, dataset_id, RESNET18)
    assert again.status_code == 202, again.text
    assert again.json()["result"]["cost"] == cost


def test_over_budget_is_a_422_naming_the_limit_before_anything_is_queued(client, auth, db, ready_dataset):
    dataset_id = ready_dataset(description=IMAGES)
    before = _jobs(db)
    response = _train(client, auth, dataset_id, {"name": "timm", "model": "resnet200d"}, {"batch_size": 16})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert "SBAUDIT_MAX_JOB_WORK" in problem["detail"] and problem["limit"] == {"work": 10**12}
    assert "body.architecture.model" in response.text
    assert _jobs(db) == before


@pytest.mark.parametrize(
    ("architecture", "says"),
    [
        ({"name": "timm", "model": "no_such_net"}, "unknown model"),
        ({"name": "torchvision", "model": "resnet18", "no_such_option": 1}, "cannot build resnet18"),
        ({"name": "timm", "model": "vit_tiny_patch16_224"}, "cannot read inputs of shape (3, 40, 40)"),
        ({"name": "torchvision", "model": "resnet18", "weights": "DEFAULT"}, "not allowed"),
        ({"name": "timm", "model": "resnet18", "drop_rate": [1]}, "must be a number"),
    ],
)
def test_what_cannot_be_built_is_a_422_on_the_architecture(
    client, auth, db, ready_dataset, architecture, says
):
    dataset_id = ready_dataset(description=IMAGES)
    before = _jobs(db)
    response = _train(client, auth, dataset_id, architecture)
    assert response.status_code == 422, response.text
    assert says in response.text and "body.architecture" in response.text
    assert _jobs(db) == before


def test_vector_datasets_are_refused_before_the_engine_is_asked(client, auth, ready_dataset):
    client.app.state.upload_validator = ["/bin/false"]
    response = _train(client, auth, ready_dataset(), RESNET18)
    assert response.status_code == 422, response.text
    assert "body.architecture.name" in response.text and "(C, H, W)" in response.text


def test_busy_validators_answer_503_with_retry_after(client, auth, ready_dataset, monkeypatch):
    from service.uploads import validator

    taken = threading.BoundedSemaphore(1)
    taken.acquire()
    monkeypatch.setattr(validator, "_slots_for", lambda settings: taken)
    response = _train(client, auth, ready_dataset(description=IMAGES), RESNET18)
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1 and "busy" in response.json()["detail"]
