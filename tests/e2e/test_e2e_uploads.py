"""Uploads against a real `sbaudit serve`: a model trained by the service, downloaded, uploaded back as
safetensors (HTTP) and as a torch state_dict (the CLI), audits to exactly the same figures with the same
seed. A dataset goes up through the CLI too, and a refusal is one line."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from e2e_flows import check_artifact, create, ready

from sbclient.cli.entry import main

torch = pytest.importorskip("torch")

DATASET = {"preset": "LMS-5", "n_train": 1000, "n_val": 200, "n_test": 500, "seed": 4}
FCN = {"name": "fcn", "width": 20, "depth": 1}
TRAINING = {"lr": 0.1, "batch_size": 100, "eval_every": 100, "stop": {"max_updates": 300}}
AUDIT = {"checks": ["randomization", "feature_dependence"], "repeats": 2, "seed": 7}


@pytest.fixture
def cli_env(embedded, monkeypatch):
    monkeypatch.setenv("SBAUDIT_URL", embedded.base_url)
    monkeypatch.setenv("SBAUDIT_API_KEY", embedded.key)


def test_an_exported_model_uploaded_back_audits_identically(embedded, cli_env, tmp_path, capsys):
    from safetensors.torch import load

    with embedded.client() as client:
        dataset = ready(client, "datasets", create(client, "/v1/datasets", DATASET))
        trained = ready(client, "models", create(client, "/v1/models", {
            "dataset_id": dataset["id"], "architecture": FCN, "training": TRAINING, "seed": 0}))  # fmt: skip
        weights = check_artifact(client, next(a for a in trained["artifacts"] if a["kind"] == "weights"))

        form = {"architecture": json.dumps(FCN), "dataset_id": dataset["id"], "name": "exported"}
        files = {"file": ("model.safetensors", weights, "application/octet-stream")}
        response = client.post("/v1/models/uploads", data=form, files=files)
        assert response.status_code == 201, response.text
        from_safetensors = response.json()
        assert from_safetensors["status"] == "ready" and from_safetensors["input_shape"] == [50]
        again = client.post("/v1/models/uploads", data=form, files=files)
        assert again.status_code == 200 and again.json()["id"] == from_safetensors["id"]

        state_dict = tmp_path / "model.pt"
        torch.save(load(weights), state_dict)
        capsys.readouterr()
        assert main(["models", "upload", str(state_dict), "--architecture", json.dumps(FCN),
                     "--dataset-id", dataset["id"]]) == 0  # fmt: skip
        from_state_dict = json.loads(capsys.readouterr().out)
        assert from_state_dict["status"] == "ready" and from_state_dict["result"]["format"] == "pytorch"

        ids = [trained["id"], from_safetensors["id"], from_state_dict["id"]]
        created = [create(client, "/v1/audits", {"model_id": i, **AUDIT}) for i in ids]
        original, *uploaded = [ready(client, "audits", a) for a in created]
        for audit in uploaded:
            assert audit["results"] == original["results"]
            assert audit["verdict"] == original["verdict"]
        rand = original["results"]["randomization"]
        assert rand["auc"] > 0.9 and rand["s_randomized_auc"]["mean"] < 0.7


def test_the_cli_uploads_a_dataset_and_reports_refusals_in_one_line(embedded, cli_env, tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    x[:, 0] = y
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y, split=np.repeat([0, 2], 100))
    blocks = json.dumps([{"name": "signal", "indices": [0]}, {"name": "rest", "indices": [1, 2, 3, 4, 5]}])
    capsys.readouterr()
    assert main(["datasets", "upload", str(path), "--blocks", blocks, "--name", "mine"]) == 0
    captured = capsys.readouterr()
    dataset = json.loads(captured.out)
    assert dataset["status"] == "ready" and dataset["sizes"] == {"train": 100, "test": 100}
    assert captured.err.startswith(f"uploaded dataset {dataset['id']}")

    broken = tmp_path / "broken.npz"
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    broken.write_bytes(buffer.getvalue()[:-50])
    assert main(["datasets", "upload", str(broken), "--blocks", blocks]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sbaudit: error: 422 body.file: ") and err.count("\n") == 1, err
    assert main(["datasets", "upload", str(path), "--blocks", "[{"]) == 2
    assert "--blocks: not valid JSON" in capsys.readouterr().err
