"""The three handlers on the real engine, in-process, with tiny workloads: generate -> train -> audit, and a
training job interrupted mid-way that resumes from its checkpoint to the same weights."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from service.models import Artifact, Job
from worker.runner import run_job

pytest.importorskip("torch")

TINY_LMS5 = {"preset": "LMS-5", "n_train": 1000, "n_val": 200, "n_test": 500, "seed": 0}


def _run(db, settings, job_id, **kwargs):
    return run_job(job_id, settings=settings, db=db, **kwargs)


def _model_body(dataset_id, max_updates=150):
    return {
        "dataset_id": dataset_id,
        "architecture": {"name": "fcn", "width": 20, "depth": 1},
        "training": {"lr": 0.1, "batch_size": 100, "eval_every": 50, "stop": {"max_updates": max_updates}},
        "seed": 1,
    }


@pytest.fixture
def engine_settings(settings):
    return settings.model_copy(update={"device": "cpu", "checkpoint_every_updates": 20})


def test_generate_train_audit(client, auth, db, engine_settings):
    ds = client.post("/v1/datasets", json=TINY_LMS5, headers=auth).json()
    assert _run(db, engine_settings, ds["job_id"]) == "succeeded"
    dataset = client.get(f"/v1/datasets/{ds['id']}", headers=auth).json()
    assert dataset["status"] == "ready" and dataset["input_shape"] == [50]
    assert dataset["sizes"] == {"train": 1000, "val": 200, "test": 500}
    assert dataset["bayes_accuracy"] == {"blocks": [1.0, 1.0], "simple": 1.0, "complex": 1.0, "all": 1.0}
    assert {a["kind"] for a in dataset["artifacts"]} == {"arrays", "description"}

    mdl = client.post("/v1/models", json=_model_body(ds["id"]), headers=auth).json()
    assert _run(db, engine_settings, mdl["job_id"]) == "succeeded"
    model = client.get(f"/v1/models/{mdl['id']}", headers=auth).json()
    assert model["status"] == "ready" and model["result"]["updates"] == 150
    assert model["metrics"]["train_accuracy"] > 0.9
    assert {a["kind"] for a in model["artifacts"]} == {"weights", "history", "training_curves"}
    assert not (engine_settings.checkpoints_dir / f"{mdl['job_id']}.pt").exists(), "checkpoint removed"

    aud = client.post("/v1/audits", json={"model_id": mdl["id"], "repeats": 2}, headers=auth).json()
    assert _run(db, engine_settings, aud["job_id"]) == "succeeded"
    audit = client.get(f"/v1/audits/{aud['id']}", headers=auth).json()
    assert audit["status"] == "ready" and audit["verdict"] and audit["verdict_code"]
    assert audit["simple_blocks"] == [0]
    rand = audit["results"]["randomization"]
    assert len(rand["s_randomized_auc"]["values"]) == 2
    weights = next(a for a in model["artifacts"] if a["kind"] == "weights")
    download = client.get(weights["url"], headers=auth)
    assert download.status_code == 200 and len(download.content) == weights["size"]


def test_engine_errors_fail_the_job_with_their_message(client, auth, db, engine_settings):
    ds = client.post("/v1/datasets", json=TINY_LMS5, headers=auth).json()
    _run(db, engine_settings, ds["job_id"])
    with db.write_session() as session:  # a request the API would have refused, straight to the engine
        job = session.get(
            Job, client.post("/v1/models", json=_model_body(ds["id"]), headers=auth).json()["job_id"]
        )
        job.params = {**job.params, "architecture": {"name": "fcn", "width": -3}}
        job_id = job.id
    assert _run(db, engine_settings, job_id) == "failed"
    with db.read_session() as session:
        assert "width" in session.get(Job, job_id).error


def test_interrupted_training_resumes_from_its_checkpoint(client, auth, db, engine_settings):
    ds = client.post("/v1/datasets", json=TINY_LMS5, headers=auth).json()
    _run(db, engine_settings, ds["job_id"])

    straight = client.post("/v1/models", json=_model_body(ds["id"], 200), headers=auth).json()
    assert _run(db, engine_settings, straight["job_id"]) == "succeeded"

    resumed = client.post("/v1/models", json=_model_body(ds["id"], 200), headers=auth).json()
    checkpoint = engine_settings.checkpoints_dir / f"{resumed['job_id']}.pt"
    stop = threading.Event()
    from worker.handlers import get_handler

    train = get_handler("train_model")

    def stop_after_a_checkpoint(ctx):
        original = ctx.progress

        def progress(event):
            if checkpoint.exists() and event.step >= 100:
                stop.set()
            original(event)

        ctx.progress = progress
        return train(ctx)

    outcome = _run(db, engine_settings, resumed["job_id"], stop_event=stop,
                   handlers={"train_model": stop_after_a_checkpoint})  # fmt: skip
    assert outcome == "released" and checkpoint.exists()
    assert _run(db, engine_settings, resumed["job_id"]) == "succeeded"

    def weights_sha(model_id):
        with db.read_session() as session:
            return session.scalar(
                select(Artifact.sha256).where(Artifact.resource_id == model_id, Artifact.kind == "weights")
            )

    assert weights_sha(resumed["id"]) == weights_sha(straight["id"]), (
        "resumed training matches an uninterrupted run"
    )
    history = client.get(f"/v1/models/{resumed['id']}", headers=auth).json()
    assert history["result"]["updates"] == 200
