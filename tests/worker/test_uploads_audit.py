"""Uploaded data and models in real jobs (in-process): the declared blocks drive randomization exactly as the
MNIST-CIFAR halves do, and an uploaded model's normalization is applied in front of its network."""

from __future__ import annotations

import io

import numpy as np
import pytest
from upload_testing import FCN_SMALL, upload

from service.storage import ArtifactStore
from worker.runner import JobContext, run_job

torch = pytest.importorskip("torch")


@pytest.fixture
def engine_settings(settings):
    return settings.model_copy(update={"device": "cpu"})


def halves_dataset(n: int = 600, seed: int = 0) -> bytes:
    """(3, 8, 8) images: a label-dependent bar in the top half (the simple feature), noise below."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.random((n, 3, 8, 8), dtype=np.float32) * 0.2
    x[:, :, 1, :] += (0.8 * y)[:, None, None]
    split = np.repeat([0, 1, 2], [400, 100, 100])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x, y=y, split=split)
    return buffer.getvalue()


def _job_context(settings, db, tmp_path) -> JobContext:
    return JobContext(
        job_id="job_test", kind="run_audit", owner="alice", resource_id="aud_test", params={}, attempt=1,
        settings=settings, db=db, store=ArtifactStore(settings.artifacts_dir), scratch=tmp_path,
        checkpoint_path=tmp_path / "checkpoint.pt", progress=lambda event: None,
    )  # fmt: skip


def test_blocks_of_uploaded_images_drive_the_audit(client, auth, db, engine_settings, tmp_path):
    blocks = [{"name": "top", "rows": [0, 4]}, {"name": "bottom", "rows": [4, 8]}]
    response = upload(
        client, auth, "/v1/datasets/uploads", halves_dataset(), filename="halves.npz", blocks=blocks
    )
    assert response.status_code == 201, response.text
    dataset = response.json()

    training = {"lr": 0.1, "batch_size": 100, "eval_every": 50, "stop": {"max_updates": 200}}
    body = {"dataset_id": dataset["id"], "architecture": FCN_SMALL, "training": training, "seed": 0}
    trained = client.post("/v1/models", json=body, headers=auth).json()
    assert run_job(trained["job_id"], settings=engine_settings, db=db) == "succeeded"

    audit = client.post("/v1/audits", json={"model_id": trained["id"], "repeats": 2}, headers=auth).json()
    assert run_job(audit["job_id"], settings=engine_settings, db=db) == "succeeded"
    audit = client.get(f"/v1/audits/{audit['id']}", headers=auth).json()
    rand = audit["results"]["randomization"]
    assert rand["auc"] > 0.95
    assert rand["s_randomized_auc"]["mean"] < 0.65, "randomizing the top half (S) removes what it uses"
    assert rand["sc_randomized_auc"]["mean"] > 0.95, "randomizing the bottom half (S^c) changes nothing"
    assert "top" in audit["verdict"]

    # The trained weights, uploaded again with an input normalization: the loader puts it in front.
    model = client.get(f"/v1/models/{trained['id']}", headers=auth).json()
    weights = client.get(next(a["url"] for a in model["artifacts"] if a["kind"] == "weights"), headers=auth)
    response = upload(
        client, auth, "/v1/models/uploads", weights.content, filename="weights.safetensors",
        architecture=FCN_SMALL, dataset_id=dataset["id"], normalization={"mean": [0.5], "std": [2.0]},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    uploaded = response.json()
    assert uploaded["input_shape"] == [3, 8, 8] and uploaded["num_classes"] == 2

    from worker.inputs import load_model

    ctx = _job_context(engine_settings, db, tmp_path)
    network, _ = load_model(ctx, trained["id"])
    normalized, _ = load_model(ctx, uploaded["id"])
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(normalized.eval()(x), network.eval()((x - 0.5) / 2.0))

    audit = client.post("/v1/audits", json={"model_id": uploaded["id"], "repeats": 1}, headers=auth).json()
    assert run_job(audit["job_id"], settings=engine_settings, db=db) == "succeeded"
