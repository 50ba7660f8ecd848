"""Ensembles, adversarial training and the pgd / uap / generalization / ensemble checks over the API:
what is accepted and stored, and each bad request answered 422 (or 404 / 409) naming the field."""

from __future__ import annotations

from service_testing import LMS5_DESCRIPTION, fields, problem

from service.ids import new_id
from service.models import Audit, Model

ATTACK = {"eps": 0.3, "step_size": 0.1, "steps": 2}


def _model(db, ready_dataset, *, owner="alice", status="ready", input_shape=(50,), ensemble_size=1) -> str:
    row = Model(
        id=new_id("model"),
        owner=owner,
        status=status,
        job_id=new_id("job"),
        dataset_id=ready_dataset(owner),
        architecture={"name": "fcn", "width": 20, "depth": 1},
        training={"ensemble_size": ensemble_size} if ensemble_size > 1 else {},
        seed=0,
        input_shape=list(input_shape),
        num_classes=2,
    )
    with db.write_session() as session:
        session.add(row)
    return row.id


def test_create_an_adversarially_trained_ensemble(client, auth, ready_dataset):
    body = {
        "dataset_id": ready_dataset(),
        "architecture": {"name": "fcn", "width": 20, "depth": 1},
        "training": {"adversarial": {"attack": ATTACK}},
        "ensemble_size": 3,
    }
    response = client.post("/v1/models", json=body, headers=auth)
    assert response.status_code == 202, response.text
    model = response.json()
    assert model["ensemble_size"] == 3 and "ensemble_size" not in model["training"]
    adversarial = model["training"]["adversarial"]
    assert adversarial["attack"] == {**ATTACK, "norm": "l2", "loss": "untargeted", "rand_eps": 0.001,
                                     "restarts": 1, "bounds": None, "minimal": False}  # fmt: skip
    assert adversarial["eval_attack"] is None and adversarial["eval_examples"] == 2000
    assert client.get(f"/v1/models/{model['id']}", headers=auth).json()["ensemble_size"] == 3
    plain = client.post("/v1/models", json={**body, "ensemble_size": 1}, headers=auth).json()
    assert plain["ensemble_size"] == 1


def test_model_request_errors(client, auth, ready_dataset):
    base = {"dataset_id": ready_dataset(), "architecture": {"name": "fcn"}}
    adv = "body.training.adversarial"
    cases = [
        ({**base, "ensemble_size": 0}, "body.ensemble_size"),
        ({**base, "ensemble_size": 33}, "body.ensemble_size"),
        ({**base, "training": {"adversarial": {}}}, f"{adv}.attack"),
        ({**base, "training": {"adversarial": {"attack": {"eps": 0.3}}}}, f"{adv}.attack.step_size"),
        ({**base, "training": {"adversarial": {"attack": {**ATTACK, "eps": 0}}}}, f"{adv}.attack.eps"),
        ({**base, "training": {"adversarial": {"attack": {**ATTACK, "steps": 1001}}}}, f"{adv}.attack.steps"),
        (
            {**base, "training": {"adversarial": {"attack": {**ATTACK, "loss": "targeted"}}}},
            f"{adv}.attack.loss",
        ),
        (
            {**base, "training": {"adversarial": {"attack": {**ATTACK, "bounds": [1, 0]}}}},
            f"{adv}.attack.bounds",
        ),
        (
            {
                **base,
                "training": {"adversarial": {"attack": ATTACK, "eval_attack": {"eps": -1, "step_size": 1}}},
            },
            f"{adv}.eval_attack.eps",
        ),
        (
            {**base, "training": {"adversarial": {"attack": ATTACK, "eval_examples": 0}}},
            f"{adv}.eval_examples",
        ),
        ({**base, "training": {"adversarial": {"attack": ATTACK, "epsilon": 1}}}, f"{adv}.epsilon"),
    ]
    for body, field in cases:
        assert field in fields(client.post("/v1/models", json=body, headers=auth)), body
    three = ready_dataset(description={**LMS5_DESCRIPTION, "num_classes": 3})
    binary = {"dataset_id": three, "architecture": {"name": "fcn"},
              "training": {"adversarial": {"attack": {**ATTACK, "loss": "binary_hybrid"}}}}  # fmt: skip
    assert f"{adv}.attack.loss" in fields(client.post("/v1/models", json=binary, headers=auth))


def test_audit_with_every_check_stores_the_resolved_options(client, auth, db, ready_dataset):
    model_id = _model(db, ready_dataset, ensemble_size=2)
    body = {
        "model_id": model_id,
        "checks": ["randomization", "generalization", "pgd", "uap", "ensemble", "feature_dependence"],
        "options": {"pgd": {"norm": "linf", "eps": 0.1, "relative": False}, "uap": {"method": "svd"}},
        "combine": "probs",
    }
    response = client.post("/v1/audits", json=body, headers=auth)
    assert response.status_code == 202, response.text
    audit = response.json()
    assert audit["ensemble_size"] == 2 and audit["combine"] == "probs" and audit["model_ids"] is None
    options = audit["options"]
    assert set(options) == {"pgd", "uap", "feature_dependence"}
    assert options["pgd"] == {"norm": "linf", "eps": 0.1, "step_size": 0.05, "steps": 20, "relative": False,
                              "restarts": 1, "loss": "untargeted", "rand_eps": 0.0}  # fmt: skip
    assert options["uap"]["method"] == "svd" and options["uap"]["fit_split"] == "val"
    assert options["feature_dependence"] == {"methods": ["random", "swap"], "sample_fraction": 1.0}
    job = client.get(f"/v1/jobs/{audit['job_id']}", headers=auth).json()
    assert job["kind"] == "run_audit"
    single = client.post("/v1/audits", json={"model_id": _model(db, ready_dataset)}, headers=auth).json()
    assert single["ensemble_size"] == 1 and single["combine"] is None and single["options"] == {}


def test_audit_option_errors(client, auth, db, ready_dataset):
    model_id = _model(db, ready_dataset)
    base = {"model_id": model_id}
    cases = [
        ({**base, "options": {"pgd": {"steps": 5}}}, "body.options.pgd"),
        ({**base, "checks": ["pgd"], "options": {"pgd": {"steps": 0}}}, "body.options.pgd.steps"),
        ({**base, "checks": ["pgd"], "options": {"pgd": {"steps": 1001}}}, "body.options.pgd.steps"),
        ({**base, "checks": ["pgd"], "options": {"pgd": {"norm": "l1"}}}, "body.options.pgd.norm"),
        ({**base, "checks": ["pgd"], "options": {"pgd": {"eps": 0}}}, "body.options.pgd.eps"),
        ({**base, "checks": ["pgd"], "options": {"pgd": {"restarts": 101}}}, "body.options.pgd.restarts"),
        ({**base, "checks": ["pgd"], "options": {"pgd": {"rand_eps": -1}}}, "body.options.pgd.rand_eps"),
        ({**base, "checks": ["pgd"], "options": {"pgd": {"loss": "targeted"}}}, "body.options.pgd.loss"),
        ({**base, "checks": ["pgd"], "options": {"pgd": {"relative": "yes"}}}, "body.options.pgd.relative"),
        ({**base, "checks": ["pgd"], "options": {"pgd": {"epsilon": 1}}}, "body.options.pgd.epsilon"),
        ({**base, "checks": ["uap"], "options": {"uap": {"method": "lbfgs"}}}, "body.options.uap.method"),
        ({**base, "checks": ["uap"], "options": {"uap": {"epochs": 101}}}, "body.options.uap.epochs"),
        (
            {**base, "checks": ["uap"], "options": {"uap": {"fit_split": "holdout"}}},
            "body.options.uap.fit_split",
        ),
        (
            {
                **base,
                "checks": ["feature_dependence"],
                "options": {"feature_dependence": {"methods": ["shap"]}},
            },
            "body.options.feature_dependence.methods.0",
        ),
        (
            {**base, "checks": ["feature_dependence"], "options": {"feature_dependence": {"methods": []}}},
            "body.options.feature_dependence.methods",
        ),
        (
            {
                **base,
                "checks": ["feature_dependence"],
                "options": {"feature_dependence": {"sample_fraction": 0}},
            },
            "body.options.feature_dependence.sample_fraction",
        ),
        ({**base, "options": {"randomization": {}}}, "body.options.randomization"),
        ({**base, "checks": ["ensemble"]}, "body.checks"),
        ({**base, "combine": "probs"}, "body.combine"),
        ({**base, "combine": "mean"}, "body.combine"),
    ]
    for body, field in cases:
        assert field in fields(client.post("/v1/audits", json=body, headers=auth)), body
    no_val = ready_dataset(description={**LMS5_DESCRIPTION, "sizes": {"train": 100, "test": 10}})
    body = {**base, "dataset_id": no_val, "checks": ["uap"]}
    assert "body.options.uap.fit_split" in fields(client.post("/v1/audits", json=body, headers=auth))
    three = ready_dataset(description={**LMS5_DESCRIPTION, "num_classes": 3})
    assert "body.dataset_id" in fields(
        client.post("/v1/audits", json={**base, "dataset_id": three}, headers=auth)
    )


def test_an_ensemble_of_model_ids(client, auth, db, ready_dataset):
    first, second = _model(db, ready_dataset), _model(db, ready_dataset)
    body = {"model_ids": [first, second], "checks": ["randomization", "ensemble"]}
    response = client.post("/v1/audits", json=body, headers=auth)
    assert response.status_code == 202, response.text
    audit = response.json()
    assert audit["model_ids"] == [first, second] and audit["model_id"] == first
    assert audit["ensemble_size"] == 2 and audit["combine"] == "logits"
    # Listing a model's audits finds the ensembles it is part of; deleting it is refused while they exist.
    listed = client.get("/v1/audits", params={"model_id": second}, headers=auth).json()["data"]
    assert [a["id"] for a in listed] == [audit["id"]]
    assert client.get("/v1/audits", params={"model_id": "mdl_%"}, headers=auth).json()["data"] == []
    with db.write_session() as session:  # the audit finished: only its inputs keep the model alive
        session.get(Audit, audit["id"]).status = "ready"
    problem(client.delete(f"/v1/models/{second}", headers=auth), 409)


def test_model_ids_errors(client, auth, other_auth, db, ready_dataset):
    first = _model(db, ready_dataset)
    cases = [
        ({"model_ids": [first]}, "body.model_ids"),
        ({"model_ids": [first, first]}, "body.model_ids"),
        ({"model_ids": [first] * 33}, "body.model_ids"),
        ({"model_ids": [first, ""]}, "body.model_ids.1"),
        ({"model_id": first, "model_ids": [first, _model(db, ready_dataset)]}, "body"),
        ({"checks": ["randomization"]}, "body"),
        ({"model_ids": [first, _model(db, ready_dataset, input_shape=(20,))]}, "body.model_ids.1"),
        ({"model_ids": [first, _model(db, ready_dataset, ensemble_size=2)]}, "body.model_ids.1"),
    ]
    for body, field in cases:
        assert field in fields(client.post("/v1/audits", json=body, headers=auth)), body
    theirs = _model(db, ready_dataset, owner="bob")
    problem(client.post("/v1/audits", json={"model_ids": [first, theirs]}, headers=auth), 404)
    failed = _model(db, ready_dataset, status="failed")
    body = problem(client.post("/v1/audits", json={"model_ids": [first, failed]}, headers=auth), 409)
    assert body["field"] == "body.model_ids.1"
    queued = _model(db, ready_dataset, status="queued")  # still training: the audit waits for it
    audit = client.post("/v1/audits", json={"model_ids": [first, queued]}, headers=auth).json()
    assert audit["status"] == "waiting"
    assert client.get(f"/v1/jobs/{audit['job_id']}", headers=auth).json()["waiting_for"] == [queued]
