"""A finished audit becomes an MLflow run: a real `sbaudit serve` with SBAUDIT_MLFLOW_TRACKING_URI pointing at
a real `mlflow server` (SQLite backend, local artifact destination; tests/mlflow_support.py), the dataset ->
model -> audit journey over HTTP, then the run as MLflow's own client reads it back from that server."""

from __future__ import annotations

import hashlib
import json

import pytest
from e2e_flows import create, ready
from e2e_support import start_server

# MLflow's own client, read in the test process, imports its SQLAlchemy store, which uses an API SQLAlchemy
# 2.1 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

TINY_LMS5 = {"preset": "LMS-5", "n_train": 1000, "n_val": 200, "n_test": 400, "seed": 0}
MODEL = {
    "architecture": {"name": "fcn", "width": 20, "depth": 1},
    "training": {"lr": 0.1, "batch_size": 100, "eval_every": 50, "stop": {"max_updates": 150}},
    "seed": 0,
}
TARGET = {"experiment": "e2e-audits", "run_name": "lms5-fcn20"}


@pytest.fixture(scope="module")
def journey(tmp_path_factory, mlflow_tracking_uri) -> dict:
    """The audit of a small LMS-5 model by a server that logs audits to the MLflow server."""
    tmp = tmp_path_factory.mktemp("mlflow-e2e")
    public_url = "https://sbaudit.example.org"
    server = start_server(tmp, SBAUDIT_MLFLOW_TRACKING_URI=mlflow_tracking_uri, SBAUDIT_PUBLIC_URL=public_url)
    try:
        with server.client() as client:
            dataset = ready(client, "datasets", create(client, "/v1/datasets", TINY_LMS5))
            model = ready(
                client, "models", create(client, "/v1/models", {"dataset_id": dataset["id"], **MODEL})
            )
            body = {
                "model_id": model["id"],
                "checks": ["randomization", "feature_dependence"],
                "mlflow": TARGET,
            }
            audit = ready(client, "audits", create(client, "/v1/audits", body))
            figures = {
                a["kind"]: client.get(a["url"]).content
                for a in audit["artifacts"]
                if a["content_type"] == "image/png"
            }
    finally:
        server.proc.stop()
    return {"dataset": dataset, "model": model, "audit": audit, "figures": figures, "public_url": public_url}


def test_the_audit_records_its_run(journey, mlflow_tracking_uri):
    from mlflow.tracking import MlflowClient

    recorded = journey["audit"]["mlflow"]
    assert recorded["error"] is None, recorded
    assert (recorded["experiment"], recorded["run_name"]) == (TARGET["experiment"], TARGET["run_name"])
    client = MlflowClient(mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(TARGET["experiment"])
    assert experiment is not None and recorded["experiment_id"] == experiment.experiment_id
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == recorded["run_id"]
    assert run.info.run_name == TARGET["run_name"] and run.info.status == "FINISHED"
    assert recorded["run_url"] == (
        f"{mlflow_tracking_uri}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
    )


def test_the_run_has_the_parameters_metrics_and_verdict(journey, mlflow_tracking_uri):
    from mlflow.tracking import MlflowClient

    audit, model, dataset = journey["audit"], journey["model"], journey["dataset"]
    run = MlflowClient(mlflow_tracking_uri).get_run(audit["mlflow"]["run_id"])
    params = run.data.params
    assert params["audit.id"] == audit["id"] and params["model.id"] == model["id"]
    assert params["dataset.id"] == dataset["id"] and params["dataset.spec.preset"] == "LMS-5"
    assert params["model.architecture.name"] == "fcn" and params["model.architecture.width"] == "20"
    assert json.loads(params["audit.checks"]) == ["randomization", "feature_dependence"]
    assert json.loads(params["audit.simple_blocks"]) == [0]
    assert (params["audit.seed"], params["audit.split"], params["audit.repeats"]) == ("0", "test", "5")
    assert params["audit.options.feature_dependence.sample_fraction"] == "1.0"

    metrics, results = run.data.metrics, audit["results"]
    assert metrics["randomization.auc"] == pytest.approx(results["randomization"]["auc"])
    for name in ("s_randomized_auc", "sc_randomized_auc"):
        assert metrics[f"randomization.{name}.mean"] == pytest.approx(results["randomization"][name]["mean"])
    linear = results["feature_dependence"]["random"][0]
    assert metrics["feature_dependence.random.block 0_ linear.accuracy"] == pytest.approx(linear["accuracy"])
    assert "randomization.n" not in metrics  # a count, not a measurement
    assert not any(key.endswith(".values") or ".histograms." in key for key in metrics)

    tags = run.data.tags
    assert tags["verdict"] == audit["verdict_code"] and tags["verdict_text"] == audit["verdict"]
    assert tags["verdict_label"] in ("simplicity_biased", "not_simplicity_biased", "inconclusive")
    assert tags["audit_url"] == f"{journey['public_url']}/v1/audits/{audit['id']}/report"


def test_the_run_has_the_figures_and_the_report(journey, mlflow_tracking_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    audit, figures = journey["audit"], journey["figures"]
    client = MlflowClient(mlflow_tracking_uri)
    run_id = audit["mlflow"]["run_id"]
    assert {a.path for a in client.list_artifacts(run_id)} == {"figures", "report.html", "results.json"}
    assert {a.path for a in client.list_artifacts(run_id, "figures")} == {f"figures/{k}.png" for k in figures}
    local = tmp_path / "run"
    local.mkdir()
    client.download_artifacts(run_id, "", str(local))
    for kind, png in figures.items():  # the very files the audit stored
        assert (
            hashlib.sha256((local / "figures" / f"{kind}.png").read_bytes()).digest()
            == hashlib.sha256(png).digest()
        )
    assert json.loads((local / "results.json").read_text())["results"] == audit["results"]
    report = (local / "report.html").read_text()
    assert f"Audit {audit['id']}" in report and audit["verdict"].split(":")[0] in report
    assert report.count('src="data:image/png;base64,') >= len(figures)
    assert f"export SBAUDIT_URL={journey['public_url']}" in report
