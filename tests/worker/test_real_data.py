"""Issue 16 end to end over HTTP (the API in-process, the real validator program, jobs run in-process):
a table with a leaky identifier column, and Fashion-MNIST garments on class-correlated backgrounds with
per-example masks. Uploaded, trained on, audited: the verdicts say what each model relies on."""

from __future__ import annotations

import pytest
from real_data import csv_bytes, leaky_table, parquet_bytes
from upload_testing import upload

from worker.runner import run_job

pytest.importorskip("torch")

ROUTE = "/v1/datasets/uploads"
FCN = {"name": "fcn", "width": 64, "depth": 2}


@pytest.fixture
def engine_settings(settings):
    return settings.model_copy(update={"device": "cpu"})


def _train_and_audit(client, auth, db, settings, dataset_id, *, updates=300, simple_blocks=None, checks=None):
    training = {"lr": 0.05, "batch_size": 50, "eval_every": 100, "stop": {"max_updates": updates}}
    body = {"dataset_id": dataset_id, "architecture": FCN, "training": training, "seed": 0}
    model = client.post("/v1/models", json=body, headers=auth).json()
    assert run_job(model["job_id"], settings=settings, db=db) == "succeeded"
    request = {"model_id": model["id"], "repeats": 3}
    if simple_blocks is not None:
        request["simple_blocks"] = simple_blocks
    if checks is not None:
        request["checks"] = checks
    audit = client.post("/v1/audits", json=request, headers=auth)
    assert audit.status_code == 202, audit.text
    audit = audit.json()
    assert run_job(audit["job_id"], settings=settings, db=db) == "succeeded"
    return client.get(f"/v1/audits/{audit['id']}", headers=auth).json()


@pytest.mark.parametrize(("fmt", "encode"), [("csv", csv_bytes), ("parquet", parquet_bytes)])
def test_a_leaky_identifier_column_is_what_the_model_relies_on(
    client, auth, db, engine_settings, fmt, encode
):
    response = upload(
        client, auth, ROUTE, encode(leaky_table()), filename=f"patients.{fmt}",
        label="y", split_column="split", categorical=["hospital_id"],
        blocks=[{"name": "site", "columns": ["hospital_id"]}],
    )  # fmt: skip
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["input_shape"] == [12] and dataset["sizes"] == {"train": 400, "val": 200, "test": 200}
    names = [b["name"] for b in dataset["blocks"]]
    assert names == ["site", "other columns"]
    audit = _train_and_audit(
        client, auth, db, engine_settings, dataset["id"], checks=["randomization", "feature_dependence"]
    )
    rand = audit["results"]["randomization"]
    assert audit["verdict_code"] in ("exclusively_s", "mostly_s"), audit["verdict"]
    assert "site" in audit["verdict"] and rand["auc"] > 0.95
    assert rand["s_randomized_auc"]["mean"] < rand["sc_randomized_auc"]["mean"] - 0.1
    groups = [row["group"] for row in audit["results"]["feature_dependence"]["random"]]
    assert "coordinate 0 (hospital_id=H0)" in groups and "coordinate 6 (m0)" in groups
