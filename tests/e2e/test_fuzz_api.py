"""Property-based fuzzing of every operation in /openapi.json against a real `sbaudit serve` (schemathesis).

Each operation gets schema-valid and schema-invalid requests (bodies, query strings, headers, multipart
forms); every response must be a documented status with a body, content type and headers that match the
schema, never a 5xx, and an invalid request must be refused with a 4xx. The server is seeded with a ready
dataset, model and audit, and path parameters and body ids are sometimes replaced by those real ids, so
the found-and-owned branches run too, not only the 404s (the comparisons get two real audits' ids).

Two more tests send a fifth as many requests to every /v1 operation without a key and with a made-up one:
never a success, and a well-formed request gets 401. A last one reads the server log for errors that no
response could show.

The number of examples per operation is SBAUDIT_FUZZ_EXAMPLES (default 50, about a minute here);
`make fuzz` runs 500. Generation is derandomized: a failure reproduces with the same count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_flows import TRAINING, create, ready
from e2e_support import Server, start_server

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("SBAUDIT_FUZZ_EXAMPLES", "50"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]

# Small bounds, so that any job a fuzzed request queues is tiny, and one worker, so they queue up instead
# of competing for the CPUs (they need not finish: the server is torn down after the module).
FUZZ_SERVER_ENV = {
    "SBAUDIT_WORKERS": "1",
    "SBAUDIT_MAX_SAMPLES": "2000",
    "SBAUDIT_MAX_FEATURES": "64",
    "SBAUDIT_MAX_WIDTH": "32",
    "SBAUDIT_MAX_DEPTH": "2",
    "SBAUDIT_MAX_BATCH_SIZE": "256",
    "SBAUDIT_MAX_UPDATES": "300",
    "SBAUDIT_MAX_EPOCHS": "5",
    "SBAUDIT_MAX_REPEATS": "5",  # the default, so that audits with default options are accepted
    "SBAUDIT_MAX_UPLOAD_BYTES": str(1 << 20),
    "SBAUDIT_UPLOAD_CHECK_CONCURRENCY": "1",
    # The fuzzer sends requests as fast as it can: rate limits would answer most of them with 429.
    "SBAUDIT_RATE_LIMIT_PER_SECOND": "0",
    "SBAUDIT_JOB_RATE_LIMIT_PER_MINUTE": "0",
    # Nor should the per-owner cap on active jobs: the creates pile up faster than one worker runs them.
    "SBAUDIT_MAX_ACTIVE_JOBS_PER_OWNER": "0",
    # GET /v1/jobs/{id}/events of a job that never ends would stream until this (a request each).
    "SBAUDIT_EVENTS_MAX_SECONDS": "1",
}
SEED_DATASET = {"preset": "LMS-5", "n_train": 1000, "n_val": 200, "n_test": 300, "seed": 1}
SEED_MODEL_TRAINING = {**TRAINING, "stop": {"max_updates": 100}}
SEED_AUDIT = {"checks": ["randomization"], "repeats": 2}
# Body fields that name a resource: a schema-valid generated value is sometimes swapped for a real id.
ID_FIELDS = ("dataset_id", "model_id")


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("fuzz"), **FUZZ_SERVER_ENV)
    yield server
    server.proc.stop()


@pytest.fixture(scope="module")
def real_ids(fuzz_server: Server) -> dict[str, Any]:
    """A ready dataset, model and audit, and the ids of their jobs and artifacts; under ``"DELETE"`` the
    ids DELETE requests get: a second audit, so the first one stays for the report routes (the dataset
    and the model are in use, so deleting them is refused)."""
    with fuzz_server.client() as client:
        dataset = ready(client, "datasets", create(client, "/v1/datasets", SEED_DATASET))
        model = ready(client, "models", create(client, "/v1/models", {
            "dataset_id": dataset["id"], "architecture": {"name": "fcn", "width": 8, "depth": 1},
            "training": SEED_MODEL_TRAINING}))  # fmt: skip
        audits = [
            create(client, "/v1/audits", {"model_id": model["id"], **SEED_AUDIT, "seed": i}) for i in (0, 1)
        ]
        audit, disposable = (ready(client, "audits", created) for created in audits)
    resources = (dataset, model, audit)
    return {
        "dataset_id": [dataset["id"]],
        "model_id": [model["id"]],
        "audit_id": [audit["id"]],
        "job_id": [r["job_id"] for r in resources],
        "artifact_id": [a["id"] for r in resources for a in r["artifacts"]],
        "DELETE": {"dataset_id": [dataset["id"]], "model_id": [model["id"]], "audit_id": [disposable["id"]]},
    }


def _with_real_ids(body: Any, ids: dict[str, Any]) -> Any:
    """Swap id fields that hold a schema-valid string (1-40 characters) for real ids: the swap keeps a
    negative case negative, so negative_data_rejection still means what it says."""
    if not isinstance(body, dict):
        return body
    return {
        k: ids[k][0] if k in ID_FIELDS and isinstance(v, str) and 1 <= len(v) <= 40 else v
        for k, v in body.items()
    }


def _load_schema(server: Server, real_ids: dict[str, Any]):
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    schema.config.update(base_url=server.base_url, request_timeout=30)
    # The tests send the key themselves (explicit headers, so ignored_auth knows it is a valid one and
    # probes without it and with a made-up one); generated Authorization values would only be noise.
    schema.config.generation.update(with_security_parameters=False)

    @schema.hook
    def before_generate_path_parameters(ctx, strategy):
        names = [p.name for p in ctx.operation.path_parameters]
        ids = real_ids["DELETE"] if ctx.operation.method.upper() == "DELETE" else real_ids
        if not names or not all(n in ids for n in names):
            return strategy
        return st.one_of(strategy, st.fixed_dictionaries({n: st.sampled_from(ids[n]) for n in names}))

    @schema.hook
    def before_generate_body(ctx, strategy):
        return st.one_of(strategy, strategy.map(lambda body: _with_real_ids(body, real_ids)))

    @schema.hook
    def before_generate_query(ctx, strategy):
        """GET /v1/audits/compare[/report]: sometimes two real audits, so the comparison itself is checked."""
        if not ctx.operation.path.startswith("/v1/audits/compare"):
            return strategy
        two = ",".join(real_ids["audit_id"] + real_ids["DELETE"]["audit_id"])

        def real(query: Any) -> Any:
            return {**query, "ids": two} if isinstance(query, dict) and "ids" in query else query

        # Some strategies draw GeneratedValue wrappers (schemathesis 4), others the plain query.
        return st.one_of(
            strategy,
            strategy.map(lambda drawn: drawn.map_value(real) if hasattr(drawn, "map_value") else real(drawn)),
        )

    return schema


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server, real_ids: dict[str, Any]):
    return _load_schema(fuzz_server, real_ids)


schema = schemathesis.pytest.from_fixture("api_schema")
keyless = schema.include(path_regex="^/v1/")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_every_operation_survives_fuzzing(case, fuzz_server: Server):
    case.call_and_validate(headers={"Authorization": f"Bearer {fuzz_server.key}"}, checks=CHECKS)


KEYLESS_SETTINGS = settings(
    max_examples=max(5, EXAMPLES // 5),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def refused(case, headers: dict[str, str] | None) -> None:
    """Every /v1 request without a valid key is refused: 401 when the request itself is well-formed (the
    body is read before the key is checked, so a malformed one may be answered 422 first)."""
    response = case.call(headers=headers)
    case.validate_response(response, checks=CHECKS[:5])
    assert response.status_code >= 400, response.text
    if case.meta is not None and case.meta.generation.mode.value == "positive":
        assert response.status_code == 401, response.text


@KEYLESS_SETTINGS
@keyless.parametrize()
def test_nothing_succeeds_without_a_key(case):
    refused(case, None)


@KEYLESS_SETTINGS
@keyless.parametrize()
def test_nothing_succeeds_with_a_made_up_key(case):
    refused(case, {"Authorization": "Bearer sbk_not-a-key-of-this-server"})


def test_the_server_survived_without_unhandled_errors(fuzz_server: Server):
    """An exception raised after the status line went out (inside a streamed response, say) is no 5xx the
    checks above could see; the server log would have it: service/errors.py logs "unhandled error on",
    uvicorn "Exception in ASGI application". (Tracebacks of failed *jobs* are expected: a fuzzed
    MNIST-CIFAR request fails without the raw data, say.)"""
    assert httpx.get(f"{fuzz_server.base_url}/readyz").status_code == 200
    log = fuzz_server.proc.output()
    for marker in ("unhandled error on", "Exception in ASGI application"):
        assert marker not in log, log[log.index(marker) - 200 :][:5000]
