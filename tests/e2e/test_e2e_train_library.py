"""Training torchvision and timm networks by name against a real `sbaudit serve`: POST /v1/models with
``{"name": "torchvision", "model": "resnet18"}`` or a timm model on an uploaded dataset of 3x40x40 images
(neither side a multiple of 32) with three classes trains through the one training loop, and an audit of the
trained model succeeds, budgeted on the figures the engine measured at submission; the same for a timm
network on an image-folder archive of 28x28 garments with per-example masks (tests/real_data.py). A
network over the server's work budget is a 422 naming SBAUDIT_MAX_JOB_WORK, with nothing queued.

Tiny on purpose (2 CPU cores): 48 images, three updates, one randomization repeat.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from e2e_flows import create, ready
from e2e_support import Server, start_server

pytest.importorskip("torch")
pytest.importorskip("timm")

SHAPE = (3, 40, 40)
WORK_LIMIT = 10**12
TRAINING = {"batch_size": 16, "stop": {"max_updates": 3}, "lr": 0.01}
AUDIT = {"checks": ["randomization"], "repeats": 1, "seed": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("train-library")
    running = start_server(tmp, SBAUDIT_WORKERS="1", SBAUDIT_MAX_JOB_WORK=str(WORK_LIMIT))
    yield running
    running.proc.stop()


@pytest.fixture(scope="module")
def dataset_id(server) -> str:
    """Three classes told apart by the top rows' brightness; train/val/test splits of 32/8/8 images."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 32), ("val", 8), ("test", 8)):
        y = rng.integers(0, 3, n)
        x = rng.uniform(0, 1, size=(n, *SHAPE)).astype(np.float32)
        x[:, :, :20] += 0.5 * y[:, None, None, None]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    blocks = [{"name": "top", "rows": [0, 20]}, {"name": "bottom", "rows": [20, 40]}]
    with server.client() as client:
        response = client.post(
            "/v1/datasets/uploads",
            data={"blocks": json.dumps(blocks)},
            files={"file": ("images.npz", buffer.getvalue(), "application/octet-stream")},
        )
        assert response.status_code == 201, response.text
        assert response.json()["input_shape"] == list(SHAPE)
        return str(response.json()["id"])


@pytest.mark.parametrize(
    ("architecture", "ensemble_size"),
    [({"name": "torchvision", "model": "resnet18"}, 1), ({"name": "timm", "model": "test_resnet"}, 2)],
)
def test_a_library_network_trains_by_name_and_its_audit_succeeds(
    server, dataset_id, architecture, ensemble_size
):
    with server.client() as client:
        body = {"dataset_id": dataset_id, "architecture": architecture, "training": TRAINING}
        created = create(client, "/v1/models", {**body, "ensemble_size": ensemble_size, "seed": 1})
        measured = created["result"]["cost"]
        model = ready(client, "models", created)
        assert model["input_shape"] == list(SHAPE) and model["num_classes"] == 3
        assert model["architecture"] == architecture
        assert model["result"]["updates"] == 3 and model["result"]["cost"] == measured
        assert set(model["metrics"]) >= {"train_accuracy", "test_accuracy"}
        audit = ready(client, "audits", create(client, "/v1/audits", {"model_id": model["id"], **AUDIT}))
        randomization = audit["results"]["randomization"]
        assert randomization["n"] == 8 and 0.0 <= randomization["accuracy"] <= 1.0
        assert randomization["auc"] is None, "three classes: no ROC AUC"
        job = client.get(f"/v1/jobs/{audit['job_id']}").json()
        assert job["estimate"]["work"] > 0


def test_a_timm_network_trains_on_an_image_folder_archive_with_masks(server, tmp_path):
    from real_data import FASHION_DIR, fashion_archives

    from sbclient import Client

    if not FASHION_DIR.exists():
        pytest.skip(f"Fashion-MNIST files not at {FASHION_DIR}")
    images, masks = fashion_archives(n_train=24, n_test=12)
    (tmp_path / "images.zip").write_bytes(images)
    (tmp_path / "masks.zip").write_bytes(masks)
    with Client(server.base_url, server.key) as sb:
        dataset = sb.upload_dataset(
            tmp_path / "images.zip",
            masks=tmp_path / "masks.zip",
            blocks=[{"name": "background", "mask": "complement"}, {"name": "garment", "mask": "region"}],
        ).resource
    assert dataset["input_shape"] == [3, 28, 28]
    with server.client() as client:
        architecture = {"name": "timm", "model": "test_resnet"}
        body = {"dataset_id": dataset["id"], "architecture": architecture, "training": TRAINING, "seed": 2}
        model = ready(client, "models", create(client, "/v1/models", body))
        assert model["input_shape"] == [3, 28, 28] and model["num_classes"] == 2
        audit = ready(client, "audits", create(client, "/v1/audits", {"model_id": model["id"], **AUDIT}))
        assert 0.0 <= audit["results"]["randomization"]["auc"] <= 1.0


def test_over_budget_and_unknown_networks_are_422s_and_nothing_is_queued(server, dataset_id):
    with server.client() as client:
        before = client.get("/v1/models").json()["data"]
        huge = client.post(
            "/v1/models",
            json={"dataset_id": dataset_id, "architecture": {"name": "timm", "model": "resnet200d"},
                  "training": {"batch_size": 16}},
        )  # fmt: skip
        assert huge.status_code == 422, huge.text
        assert "SBAUDIT_MAX_JOB_WORK" in huge.json()["detail"] and huge.json()["limit"] == {
            "work": WORK_LIMIT
        }
        unknown = client.post(
            "/v1/models",
            json={"dataset_id": dataset_id, "architecture": {"name": "torchvision", "model": "resnet9000"}},
        )
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["errors"][0]["field"] == "body.architecture"
        assert "unknown model 'resnet9000'" in unknown.json()["detail"]
        assert client.get("/v1/models").json()["data"] == before
        listing = {entry["name"]: entry for entry in client.get("/v1/architectures").json()["data"]}
        assert listing["torchvision"]["trainable"] is True and listing["timm"]["trainable"] is True
