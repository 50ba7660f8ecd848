"""The user journey both modes must support (imported by the embedded and the scaled tests)."""

from __future__ import annotations

import hashlib
import time

import httpx
from e2e_support import wait_for_job

SMALL_LMS5 = {"preset": "LMS-5", "n_train": 2000, "n_val": 500, "n_test": 1000, "seed": 0}
FCN = {"name": "fcn", "width": 100, "depth": 2}
TRAINING = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-5, "batch_size": 256, "eval_every": 100,
            "stop": {"train_accuracy": 0.9999, "max_updates": 5000}}  # fmt: skip


def create(client: httpx.Client, path: str, body: dict, **headers: str) -> dict:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.headers["location"].endswith(response.json()["id"])
    return response.json()


def ready(client: httpx.Client, kind: str, created: dict) -> dict:
    job = wait_for_job(client, created["job_id"])
    assert job["state"] == "succeeded", job
    resource = client.get(f"/v1/{kind}/{created['id']}").json()
    assert resource["status"] == "ready", resource
    return resource


def check_artifact(client: httpx.Client, artifact: dict) -> bytes:
    response = client.get(artifact["url"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(artifact["content_type"])
    assert int(response.headers["content-length"]) == artifact["size"] == len(response.content)
    assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
    return response.content


def dataset_model_audit(client: httpx.Client) -> dict:
    """Create the LMS-5 dataset, train the (100,2)-FCN, audit it: S-randomized AUC ~ 0.5, S^c ~ 1."""
    dataset = ready(
        client, "datasets", create(client, "/v1/datasets", SMALL_LMS5, **{"Idempotency-Key": "ds-1"})
    )
    # A retry of the same request is answered from the record, without a second job.
    replay = client.post("/v1/datasets", json=SMALL_LMS5, headers={"Idempotency-Key": "ds-1"})
    assert replay.status_code == 202 and replay.json()["id"] == dataset["id"]
    assert dataset["input_shape"] == [50] and dataset["simple_blocks"] == [0]
    for artifact in dataset["artifacts"]:
        check_artifact(client, artifact)

    model = ready(client, "models", create(client, "/v1/models", {
        "dataset_id": dataset["id"], "architecture": FCN, "training": TRAINING, "seed": 0}))  # fmt: skip
    assert model["metrics"]["train_accuracy"] >= 0.99
    weights = next(a for a in model["artifacts"] if a["kind"] == "weights")
    assert check_artifact(client, weights)[:8]  # safetensors header length

    audit = ready(client, "audits", create(client, "/v1/audits", {
        "model_id": model["id"], "checks": ["randomization", "feature_dependence"],
        "simple_blocks": [0]}))  # fmt: skip
    rand = audit["results"]["randomization"]
    assert 0.4 <= rand["s_randomized_auc"]["mean"] <= 0.6, rand
    assert rand["sc_randomized_auc"]["mean"] >= 0.95, rand
    assert "feature_dependence" in audit["results"] and audit["verdict"]
    return {"dataset": dataset, "model": model, "audit": audit}


# Long enough that the job is still training when a test interrupts it, even on a fast idle machine (600
# updates of this model once ran inside one progress interval on CI); short enough to finish in seconds.
INTERRUPTIBLE_UPDATES = 6000


def long_training(client: httpx.Client, dataset_id: str, max_updates: int) -> dict:
    """A training job that runs long enough to be interrupted (no early stop)."""
    training = {**TRAINING, "stop": {"max_updates": max_updates}, "eval_every": 100}
    return create(client, "/v1/models", {"dataset_id": dataset_id,
                                         "architecture": {"name": "fcn", "width": 20, "depth": 1},
                                         "training": training, "seed": 0})  # fmt: skip


def wait_until_training(
    client: httpx.Client, job_id: str, *, min_progress: float = 0.0, timeout: float = 120
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] == "running" and job["stage"] == "train" and job["progress"] > min_progress:
            return job
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never made progress: {job}")


TINY_LMS5 = {"preset": "LMS-5", "n_train": 1000, "n_val": 200, "n_test": 300, "seed": 3}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def attacks_and_plots(client: httpx.Client) -> dict:
    """Audit a small model with the generalization, PGD and UAP checks; every figure downloads as a PNG."""
    dataset = ready(client, "datasets", create(client, "/v1/datasets", TINY_LMS5))
    model = ready(client, "models", create(client, "/v1/models", {
        "dataset_id": dataset["id"], "architecture": {"name": "fcn", "width": 20, "depth": 1},
        "training": {**TRAINING, "stop": {"max_updates": 200}}}))  # fmt: skip
    audit = ready(client, "audits", create(client, "/v1/audits", {
        "model_id": model["id"], "checks": ["randomization", "generalization", "pgd", "uap"], "repeats": 2,
        "options": {"pgd": {"steps": 5}, "uap": {"steps": 5, "epochs": 1}}}))  # fmt: skip
    results = audit["results"]
    assert set(results) == {"randomization", "generalization", "pgd", "uap"}
    assert 0 <= results["pgd"]["accuracy"] <= 1 and results["generalization"]["summary"]
    assert set(results["uap"]["block_share"]) == {b["name"] for b in dataset["blocks"]}
    plots = {a["kind"]: a for a in audit["artifacts"] if a["content_type"] == "image/png"}
    expected = {
        "logit_histograms",
        "decision_boundary",
        "pgd_heatmap",
        "pgd_block_share",
        "uap_vector",
        "uap_block_share",
    }
    assert expected <= set(plots), plots
    assert set(audit["environment"]) == {"sbaudit", "torch", "python", "device"}, audit["environment"]
    for artifact in plots.values():
        assert check_artifact(client, artifact).startswith(PNG_SIGNATURE)
    curves = next(a for a in model["artifacts"] if a["kind"] == "training_curves")
    assert check_artifact(client, curves).startswith(PNG_SIGNATURE)
    return audit


def pipeline_in_three_posts(client: httpx.Client) -> dict:
    """The README pipeline submitted back to back, each POST naming the one before while it is not ready
    (the model and the audit wait for their inputs), then one wait, on the audit."""
    dataset = create(client, "/v1/datasets", {**SMALL_LMS5, "seed": 3})
    model = create(client, "/v1/models", {
        "dataset_id": dataset["id"], "architecture": FCN, "training": TRAINING, "seed": 0})  # fmt: skip
    audit = create(client, "/v1/audits", {
        "model_id": model["id"], "checks": ["randomization"], "simple_blocks": [0]})  # fmt: skip
    assert model["status"] == "waiting" and audit["status"] == "waiting", (model, audit)
    assert client.get(f"/v1/jobs/{audit['job_id']}").json()["waiting_for"] == [model["id"], dataset["id"]]
    audit = ready(client, "audits", audit)
    rand = audit["results"]["randomization"]
    assert 0.4 <= rand["s_randomized_auc"]["mean"] <= 0.6, rand
    assert rand["sc_randomized_auc"]["mean"] >= 0.95, rand
    assert audit["verdict"] and audit["verdict_code"]
    for kind, resource in (("datasets", dataset), ("models", model)):
        assert client.get(f"/v1/{kind}/{resource['id']}").json()["status"] == "ready"
    return audit


# A server where every dataset job fails (its time limit is shorter than any dataset takes): the
# dependency that fails, for failing_input_fails_dependents.
FAILING_DATASETS_ENV = {"SBAUDIT_JOB_TIME_LIMITS": '{"generate_dataset": 0.001}'}


def failing_input_fails_dependents(client: httpx.Client) -> None:
    """On a server with FAILING_DATASETS_ENV: the dataset fails, and the model and the audit waiting for it
    fail with its id (and the model's) in their errors."""
    dataset = create(client, "/v1/datasets", SMALL_LMS5)
    model = create(
        client, "/v1/models", {"dataset_id": dataset["id"], "architecture": FCN, "training": TRAINING}
    )
    audit = create(client, "/v1/audits", {"model_id": model["id"], "checks": ["randomization"]})
    failed = wait_for_job(client, audit["job_id"], timeout=120)
    dataset_job = client.get(f"/v1/jobs/{dataset['job_id']}").json()
    assert dataset_job["state"] == "failed" and "time limit" in dataset_job["error"], dataset_job
    model_job = client.get(f"/v1/jobs/{model['job_id']}").json()
    assert model_job["state"] == "failed", model_job
    assert model_job["error"] == f"input dataset {dataset['id']} failed: {dataset_job['error']}"
    assert failed["state"] == "failed" and failed["started_at"] is None, failed
    assert failed["error"] == f"input model {model['id']} failed: {model_job['error']}"
    assert client.get(f"/v1/audits/{audit['id']}").json()["status"] == "failed"
