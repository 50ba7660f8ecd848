"""An audit's MLflow run (worker/mlflow_runs.py), with the real engine in-process: how results become metric
names, that MLflow trouble never fails an audit (it is recorded on it instead), and that a run whose audit
ends up not recorded is deleted from a real tracking server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service import jobstore
from worker.handlers.audit import run_audit_job
from worker.mlflow_runs import leaves, metrics, run_url
from worker.runner import HandlerResult, JobContext, run_job

pytest.importorskip("torch")
# MLflow's own client, read in the test process, imports its SQLAlchemy store, which uses an API SQLAlchemy
# 2.1 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

TINY_LMS5 = {"preset": "LMS-5", "n_train": 600, "n_val": 100, "n_test": 200, "seed": 0}
MODEL = {
    "architecture": {"name": "fcn", "width": 20, "depth": 1},
    "training": {"lr": 0.1, "batch_size": 100, "eval_every": 50, "stop": {"max_updates": 60}},
    "seed": 1,
}


@pytest.fixture
def engine_settings(settings):
    return settings.model_copy(update={"device": "cpu"})


@pytest.fixture
def tracking_client(settings, db):
    """An API that logs audits to MLflow (the jobs themselves run with each test's worker settings)."""
    from sbserver.wiring import upload_validator_program
    from service.app import create_app

    tracked = settings.model_copy(update={"mlflow_tracking_uri": "http://127.0.0.1:9"})
    with TestClient(create_app(tracked, db=db, upload_validator=upload_validator_program())) as client:
        yield client


@pytest.fixture
def model_id(tracking_client, auth, db, engine_settings) -> str:
    dataset = tracking_client.post("/v1/datasets", json=TINY_LMS5, headers=auth).json()
    assert run_job(dataset["job_id"], settings=engine_settings, db=db) == "succeeded"
    model = tracking_client.post(
        "/v1/models", json={"dataset_id": dataset["id"], **MODEL}, headers=auth
    ).json()
    assert run_job(model["job_id"], settings=engine_settings, db=db) == "succeeded"
    return model["id"]


def _audit(client, auth, model_id: str, **body) -> dict:
    response = client.post("/v1/audits", json={"model_id": model_id, "repeats": 1, **body}, headers=auth)
    assert response.status_code == 202, response.text
    return response.json()


def test_metrics_are_the_measurements_of_the_results_by_dotted_path():
    results = {
        "randomization": {
            "auc": 0.99,
            "n": 200,
            "split": "test",
            "s_randomized_auc": {"mean": 0.51, "std": 0.01, "values": [0.5, 0.52]},
            "histograms": {"bin_edges": [0.0, 1.0]},
        },
        "generalization": {"suboptimal": True, "margin": None},
        "feature_dependence": {
            "random": [
                {"group": "block 0: linear", "coordinates": 1, "accuracy": 0.5},
                {"group": "coordinate 3", "coordinates": 1, "accuracy": 0.9},
            ]
        },
    }
    assert metrics(results) == {
        "randomization.auc": 0.99,
        "randomization.s_randomized_auc.mean": 0.51,
        "randomization.s_randomized_auc.std": 0.01,
        "generalization.suboptimal": 1.0,
        "feature_dependence.random.block 0_ linear.accuracy": 0.5,
        "feature_dependence.random.coordinate 3.accuracy": 0.9,
    }
    # Parameters keep lists whole (as JSON, by the caller); records without unique names stay a list.
    assert dict(leaves({"a": {"b": [1, 2]}, "c": [{"x": 1}, {"x": 2}]})) == {
        "a.b": [1, 2],
        "c": [{"x": 1}, {"x": 2}],
    }


def test_run_urls_point_at_the_mlflow_ui_without_credentials():
    assert (
        run_url("http://u:secret@mlflow:5000/", "3", "abc") == "http://mlflow:5000/#/experiments/3/runs/abc"
    )
    assert run_url("https://host/mlflow", "1", "r") == "https://host/mlflow/#/experiments/1/runs/r"
    assert run_url("file:///tmp/mlruns", "1", "r") is None


def test_mlflow_trouble_is_recorded_and_never_fails_the_audit(
    tracking_client, auth, db, engine_settings, model_id, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once, not after the backoff
    # A worker that was not given the tracking server the API has.
    audit = _audit(tracking_client, auth, model_id)
    assert run_job(audit["job_id"], settings=engine_settings, db=db) == "succeeded"
    shown = tracking_client.get(f"/v1/audits/{audit['id']}", headers=auth).json()
    assert shown["status"] == "ready" and shown["verdict"] and shown["results"]["randomization"]
    assert shown["mlflow"]["run_id"] is None
    assert "SBAUDIT_MLFLOW_TRACKING_URI" in shown["mlflow"]["error"]
    # A tracking server that does not answer (nothing listens on the discard port).
    audit = _audit(tracking_client, auth, model_id, mlflow={"experiment": "down"})
    unreachable = engine_settings.model_copy(update={"mlflow_tracking_uri": "http://127.0.0.1:9"})
    assert run_job(audit["job_id"], settings=unreachable, db=db) == "succeeded"
    shown = tracking_client.get(f"/v1/audits/{audit['id']}", headers=auth).json()
    assert shown["status"] == "ready" and len(shown["artifacts"]) > 1
    assert shown["mlflow"]["experiment"] == "down" and shown["mlflow"]["run_id"] is None
    assert "127.0.0.1:9" in shown["mlflow"]["error"], shown["mlflow"]


def test_a_run_whose_audit_is_not_recorded_is_deleted(
    tracking_client, auth, db, engine_settings, model_id, mlflow_tracking_uri
):
    from mlflow.tracking import MlflowClient

    worker_settings = engine_settings.model_copy(update={"mlflow_tracking_uri": mlflow_tracking_uri})
    audit = _audit(tracking_client, auth, model_id, mlflow={"experiment": "retracted"})
    published = []

    def cancel_once_published(ctx: JobContext) -> HandlerResult:
        """The audit, canceled by its owner in the moment between its run being logged and it being
        recorded."""
        result = run_audit_job(ctx)
        run = result.publisher
        assert run is not None

        class CancelMeanwhile:
            def publish(self, artifacts):
                fields = run.publish(artifacts)
                published.append(fields["params"]["mlflow"])
                jobstore.cancel_job(db, owner=ctx.owner, job_id=ctx.job_id)
                return fields

            def retract(self):
                run.retract()

        result.publisher = CancelMeanwhile()
        return result

    outcome = run_job(
        audit["job_id"], settings=worker_settings, db=db, handlers={"run_audit": cancel_once_published}
    )
    assert outcome == "canceled"
    assert tracking_client.get(f"/v1/audits/{audit['id']}", headers=auth).json()["status"] == "canceled"
    [logged] = published
    assert logged["run_id"] and "error" not in logged, logged
    assert MlflowClient(mlflow_tracking_uri).get_run(logged["run_id"]).info.lifecycle_stage == "deleted"
