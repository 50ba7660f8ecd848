"""A client generated from /openapi.json by openapi-python-client runs the whole pipeline.

The OpenAPI document is the contract for clients written in other languages and for generated ones; the
hand-written sbclient does not read it, so nothing else would notice a document that generates badly:
path-derived operation names (``create_dataset_v1_datasets_post``), a type per operation and error
status instead of one ``Problem``, or schemas the generator cannot parse (``--fail-on-warning``).

The document is fetched from a real `sbaudit serve`, the client is generated into a temporary folder
(offline: ``--path`` and no post-hooks, so the generator runs nothing else and fetches nothing) and
imported, and it then generates an LMS-5 dataset, trains a (100,2)-FCN and audits it for simplicity bias.
Every answer is parsed by the generated models: the test asserts their types, not raw dicts.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

PACKAGE = "sbaudit_generated_client"
# The generator's default post-hooks run ruff on its output; the test needs none of that.
GENERATOR_CONFIG = "post_hooks: []\n"


@pytest.fixture(scope="module")
def generated(embedded, tmp_path_factory) -> Iterator[Path]:
    """The generated package's folder, importable as ``PACKAGE`` while the module's tests run."""
    tmp = tmp_path_factory.mktemp("generated")
    response = httpx.get(f"{embedded.base_url}/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    (tmp / "openapi.json").write_text(json.dumps(response.json()))
    (tmp / "config.yaml").write_text(GENERATOR_CONFIG)
    package = tmp / "src" / PACKAGE
    args = ["generate", "--path", tmp / "openapi.json", "--output-path", package,
            "--config", tmp / "config.yaml", "--meta", "none", "--fail-on-warning"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", *map(str, args)],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(package.parent))
    try:
        yield package
    finally:
        sys.path.remove(str(package.parent))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_modules_and_types_are_named_after_the_operation_ids(generated):
    api = {p.relative_to(generated / "api").as_posix() for p in (generated / "api").rglob("*.py")}
    for name in ("datasets/create_dataset.py", "datasets/list_datasets.py", "datasets/upload_dataset.py",
                 "models/create_model.py", "audits/create_audit.py", "audits/get_audit_report.py",
                 "jobs/get_job.py", "jobs/cancel_job.py", "jobs/stream_job_events.py",
                 "artifacts/download_artifact.py", "health/get_health.py", "usage/get_usage.py"):  # fmt: skip
        assert name in api, sorted(api)
    assert not [n for n in api if "v1" in n or n.endswith(("_get.py", "_post.py", "_delete.py"))]
    types = {p.stem for p in (generated / "models").glob("*.py")}
    assert {"problem", "dataset_create", "dataset_page", "job_read"} <= types
    assert not [t for t in types if "_response_" in t]  # errors are the one Problem type


def wait_ready(client: Any, kind: str, created: Any, *, timeout: float = 300) -> Any:
    """Follow the resource's job to its end with GET /v1/jobs/{id}?wait=, then GET the resource."""
    models = module("models")
    get_job = module("api.jobs.get_job")
    deadline = time.monotonic() + timeout
    while True:
        job = get_job.sync(created.job_id, client=client, wait=20)
        assert isinstance(job, models.JobRead), job
        if job.state in (models.JobReadState.SUCCEEDED, models.JobReadState.FAILED,
                         models.JobReadState.CANCELED):  # fmt: skip
            break
        assert time.monotonic() < deadline, f"job {job.id} still {job.state}"
    assert job.state == models.JobReadState.SUCCEEDED, job.error
    resource = module(f"api.{kind}s.get_{kind}").sync(created.id, client=client)
    assert isinstance(resource, type(created)), resource
    assert resource.status == "ready", resource
    return resource


def test_a_generated_client_audits_a_model_from_dataset_to_verdict(embedded, generated):
    m = module("models")
    client_module = module("client")
    create_dataset = module("api.datasets.create_dataset")
    create_model = module("api.models.create_model")
    create_audit = module("api.audits.create_audit")
    get_audit_report = module("api.audits.get_audit_report")
    list_jobs = module("api.jobs.list_jobs")
    get_job = module("api.jobs.get_job")

    # GET /v1/jobs/{id}?wait=20 holds the request open: the timeout must outlast it.
    client = client_module.AuthenticatedClient(
        base_url=embedded.base_url,
        token=embedded.key,
        timeout=httpx.Timeout(90),
        raise_on_unexpected_status=True,
    )
    with client:
        created = create_dataset.sync(client=client, body=m.DatasetCreate(
            preset=m.DatasetCreatePresetType0.LMS_5, n_train=2000, n_val=500, n_test=500,
            seed=0))  # fmt: skip
        assert isinstance(created, m.DatasetRead), created
        dataset = wait_ready(client, "dataset", created)
        assert dataset.input_shape == [50] and dataset.simple_blocks == [0]

        training = m.TrainingConfig(optimizer=m.TrainingConfigOptimizer.SGD, lr=0.1, batch_size=256,
                                    eval_every=100,
                                    stop=m.StopRule(train_accuracy=0.9999, max_updates=3000))  # fmt: skip
        created = create_model.sync(client=client, body=m.ModelCreate(
            dataset_id=dataset.id, architecture=m.FCNArchitecture(name="fcn", width=100, depth=2),
            training=training, seed=0))  # fmt: skip
        assert isinstance(created, m.ModelRead), created
        model = wait_ready(client, "model", created)
        assert isinstance(model.metrics, m.ModelReadMetricsType0)
        assert model.metrics["train_accuracy"] >= 0.99, model.metrics.to_dict()

        created = create_audit.sync(client=client, body=m.AuditCreate(
            model_id=model.id, checks=[m.AuditCreateChecksItem.RANDOMIZATION],
            simple_blocks=[0]))  # fmt: skip
        assert isinstance(created, m.AuditRead), created
        audit = wait_ready(client, "audit", created)
        assert audit.verdict_code == "exclusively_s", audit.verdict
        assert "simplicity bias" in audit.verdict

        report = get_audit_report.sync(audit.id, client=client)
        assert isinstance(report, m.ReportRead), report
        assert report.verdict_label == m.ReportReadVerdictLabel.SIMPLICITY_BIASED
        assert isinstance(report.audit, m.AuditRead) and report.audit.id == audit.id
        assert isinstance(report.model, m.ModelRead) and report.model.id == model.id

        jobs = list_jobs.sync(client=client, resource_id=audit.id)
        assert isinstance(jobs, m.JobPage) and [j.id for j in jobs.data] == [audit.job_id]
        assert all(isinstance(j, m.JobRead) for j in jobs.data)

        # An error answer parses into the one shared problem type.
        missing = get_job.sync("job_AAAAAAAAAAAAAAAA", client=client)
        assert isinstance(missing, m.Problem), missing
        assert (missing.status, missing.type_) == (404, "urn:sbaudit:problem:not-found")
