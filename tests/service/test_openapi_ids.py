"""Every operation in /openapi.json has a short camelCase operationId that names what it does.

Client generators (openapi-python-client, openapi-generator, orval, ...) name functions, modules and types
after operationId. FastAPI's default id is the function name, path and method (``create_dataset_v1_datasets
_post``), which a generated client turns into ``create_dataset_v1_datasets_post`` and
``CreateDatasetV1DatasetsPostResponse422``. The ids are set per route (``operation_id=``), so this test
catches a new route that forgets one, and it pins the published names: renaming one breaks every
generated client, so a change here should be deliberate.
"""

from __future__ import annotations

import re

import pytest

METHODS = ("get", "post", "put", "patch", "delete")
CAMEL_CASE = re.compile(r"[a-z]+(?:[A-Z][a-z0-9]*)*")

# (method, path) -> operationId: the names generated clients are built from.
EXPECTED = {
    ("post", "/v1/datasets"): "createDataset",
    ("get", "/v1/datasets"): "listDatasets",
    ("get", "/v1/datasets/{dataset_id}"): "getDataset",
    ("delete", "/v1/datasets/{dataset_id}"): "deleteDataset",
    ("post", "/v1/datasets/uploads"): "uploadDataset",
    ("post", "/v1/models"): "createModel",
    ("get", "/v1/models"): "listModels",
    ("get", "/v1/architectures"): "listArchitectures",
    ("get", "/v1/models/{model_id}"): "getModel",
    ("delete", "/v1/models/{model_id}"): "deleteModel",
    ("post", "/v1/models/uploads"): "uploadModel",
    ("post", "/v1/audits"): "createAudit",
    ("get", "/v1/audits"): "listAudits",
    ("get", "/v1/audits/{audit_id}"): "getAudit",
    ("delete", "/v1/audits/{audit_id}"): "deleteAudit",
    ("get", "/v1/audits/{audit_id}/report.json"): "getAuditReport",
    ("get", "/v1/audits/{audit_id}/report"): "getAuditReportHtml",
    ("get", "/v1/audits/{audit_id}/results.csv"): "getAuditResultsCsv",
    ("get", "/v1/audits/compare"): "compareAudits",
    ("get", "/v1/audits/compare/report"): "compareAuditsHtml",
    ("get", "/v1/jobs"): "listJobs",
    ("get", "/v1/jobs/{job_id}"): "getJob",
    ("post", "/v1/jobs/{job_id}/cancel"): "cancelJob",
    ("get", "/v1/jobs/{job_id}/events"): "streamJobEvents",
    ("get", "/v1/artifacts/{artifact_id}"): "downloadArtifact",
    ("get", "/v1/usage"): "getUsage",
    ("get", "/healthz"): "getHealth",
    ("get", "/readyz"): "getReadiness",
    ("get", "/metrics"): "getMetrics",
}


@pytest.fixture
def operation_ids(app) -> dict[tuple[str, str], str | None]:
    return {
        (method, path): operation.get("operationId")
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_every_operation_id_is_camel_case_unique_and_free_of_the_path(operation_ids):
    ids = list(operation_ids.values())
    assert len(ids) >= len(EXPECTED)
    for (method, path), operation_id in operation_ids.items():
        assert operation_id, (method, path)
        assert CAMEL_CASE.fullmatch(operation_id), (method, path, operation_id)
        assert "v1" not in operation_id.lower(), (method, path, operation_id)
    assert len(set(ids)) == len(ids), sorted(i for i in ids if ids.count(i) > 1)


def test_operation_ids_are_the_published_names(operation_ids):
    assert operation_ids == EXPECTED


def test_html_pages_stay_out_of_the_schema(app):
    assert not any(path == "/" or path.startswith("/ui") for path in app.openapi()["paths"])
