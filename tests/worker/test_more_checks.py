"""The train and audit handlers on the real engine, in-process, with tiny workloads: the pgd / uap /
generalization / ensemble checks and their figures, ensembles (one model with ensemble_size > 1, or
model_ids) and adversarial training."""

from __future__ import annotations

import json

import pytest

from worker.runner import run_job

pytest.importorskip("torch")

TINY_LMS5 = {"preset": "LMS-5", "n_train": 1000, "n_val": 200, "n_test": 300, "seed": 0}
FCN = {"name": "fcn", "width": 20, "depth": 1}
TRAINING = {"lr": 0.1, "batch_size": 100, "eval_every": 50, "stop": {"max_updates": 150}}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST_OPTIONS = {"pgd": {"steps": 5}, "uap": {"steps": 5, "epochs": 1}}


@pytest.fixture
def engine_settings(settings):
    return settings.model_copy(update={"device": "cpu", "checkpoint_every_updates": 50})


@pytest.fixture
def make(client, auth, db, engine_settings):
    """``make(kind, body)``: POST it, run its job in-process, return the resource as GET answers it."""

    def run(kind: str, body: dict) -> dict:
        created = client.post(f"/v1/{kind}", json=body, headers=auth)
        assert created.status_code == 202, created.text
        assert run_job(created.json()["job_id"], settings=engine_settings, db=db) == "succeeded"
        resource = client.get(f"/v1/{kind}/{created.json()['id']}", headers=auth).json()
        assert resource["status"] == "ready", resource
        return resource

    return run


def _pngs(client, auth, resource: dict) -> dict[str, bytes]:
    """Every image artifact of a resource, downloaded, by kind."""
    out = {}
    for artifact in resource["artifacts"]:
        if artifact["content_type"] == "image/png":
            response = client.get(artifact["url"], headers=auth)
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            assert len(response.content) == artifact["size"]
            out[artifact["kind"]] = response.content
    assert all(png.startswith(PNG_SIGNATURE) for png in out.values())
    return out


def test_pgd_uap_and_generalization_audit_with_figures(client, auth, make):
    dataset = make("datasets", TINY_LMS5)
    model = make("models", {"dataset_id": dataset["id"], "architecture": FCN, "training": TRAINING})
    assert model["ensemble_size"] == 1
    assert {a["kind"] for a in model["artifacts"]} == {"weights", "history", "training_curves"}
    assert set(_pngs(client, auth, model)) == {"training_curves"}

    audit = make("audits", {"model_id": model["id"],
                            "checks": ["randomization", "generalization", "pgd", "uap"],
                            "options": FAST_OPTIONS, "repeats": 2})  # fmt: skip
    results = audit["results"]
    assert set(results) == {"randomization", "generalization", "pgd", "uap"}
    # Each check's report section is stored with the results, in the order the checks ran.
    assert [s["check"] for s in audit["sections"]] == list(results)
    assert {f["name"] for s in audit["sections"] for f in s["figures"]} == set(_pngs(client, auth, audit))
    assert {"accuracy", "bayes_accuracy_s", "bayes_accuracy_sc", "suboptimal"} <= set(
        results["generalization"]
    )
    pgd = results["pgd"]
    assert pgd["config"]["steps"] == 5 and pgd["n"] == 300
    assert {"accuracy", "clean_accuracy", "block_share", "simple_share", "heatmap"} <= set(pgd)
    uap = results["uap"]
    assert uap["fit_split"] == "val" and uap["eval_split"] == "test" and uap["epochs"] == 1
    assert {"accuracy", "fooling_rate", "block_share", "simple_share", "uap"} <= set(uap)
    assert audit["options"]["pgd"]["steps"] == 5 and audit["options"]["pgd"]["relative"] is True
    figures = _pngs(client, auth, audit)
    assert {"logit_histograms", "pgd_heatmap", "pgd_block_share", "uap_vector", "uap_block_share"} <= set(
        figures
    )
    results_file = next(a for a in audit["artifacts"] if a["kind"] == "results")
    stored = json.loads(client.get(results_file["url"], headers=auth).content)
    assert stored["results"]["pgd"]["accuracy"] == pgd["accuracy"]


def test_an_ensemble_model_and_an_ensemble_of_models(client, auth, make):
    dataset = make("datasets", TINY_LMS5)
    body = {"dataset_id": dataset["id"], "architecture": FCN, "training": TRAINING, "seed": 3}
    ensemble = make("models", {**body, "ensemble_size": 2})
    assert ensemble["ensemble_size"] == 2
    kinds = {a["kind"] for a in ensemble["artifacts"]}
    assert kinds == {"weights_0", "weights_1", "history", "training_curves"}
    member1 = next(a for a in ensemble["artifacts"] if a["kind"] == "weights_1")
    assert member1["filename"] == f"{ensemble['id']}-member1.safetensors"
    result = ensemble["result"]
    assert [m["seed"] for m in result["members"]] == [3, 3 + 1_000_003]
    assert result["updates"] == 150 and result["ensemble_size"] == 2
    assert ensemble["metrics"]["test_accuracy"] > 0.9
    history = json.loads(
        client.get(
            next(a["url"] for a in ensemble["artifacts"] if a["kind"] == "history"), headers=auth
        ).content
    )
    assert len(history) == 2 and [row["step"] for row in history[0]] == [0, 50, 100, 150]

    audit = make(
        "audits", {"model_id": ensemble["id"], "checks": ["ensemble", "randomization"], "repeats": 2}
    )
    summary = audit["results"]["ensemble"]
    assert summary["size"] == 2 and summary["combine"] == "logits" and len(summary["members"]) == 2
    assert {"logit_histograms", "ensemble_members"} <= set(_pngs(client, auth, audit))

    # Member 0 of an ensemble is the model a plain run with the same seed trains: an ensemble of two plain
    # models with the members' seeds gives the same ensemble summary.
    singles = [make("models", {**body, "seed": seed}) for seed in (3, 3 + 1_000_003)]
    combined = make("audits", {"model_ids": [m["id"] for m in singles], "checks": ["ensemble"], "repeats": 2,
                               "combine": "logits"})  # fmt: skip
    assert combined["model_ids"] == [m["id"] for m in singles] and combined["ensemble_size"] == 2
    assert combined["results"]["ensemble"]["ensemble"] == summary["ensemble"]
    assert "ensemble_members" in _pngs(client, auth, combined)


def test_adversarial_training_records_robust_accuracy(client, auth, make):
    dataset = make("datasets", TINY_LMS5)
    adversarial = {"attack": {"norm": "l2", "eps": 0.3, "step_size": 0.1, "steps": 2}, "eval_examples": 100}
    training = {**TRAINING, "eval_every": 20, "stop": {"max_updates": 40}, "adversarial": adversarial}
    model = make("models", {"dataset_id": dataset["id"], "architecture": FCN, "training": training})
    assert model["training"]["adversarial"]["attack"]["eps"] == 0.3
    history = json.loads(
        client.get(next(a["url"] for a in model["artifacts"] if a["kind"] == "history"), headers=auth).content
    )
    assert [row["step"] for row in history] == [0, 20, 40]
    assert all(0 <= row["robust_accuracy"] <= 1 and "s_randomized_accuracy" in row for row in history)
    assert "training_curves" in _pngs(client, auth, model)
