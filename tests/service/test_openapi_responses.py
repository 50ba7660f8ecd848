"""/openapi.json declares every response the API can give, with its content type and body schema.

Regressions found by the schemathesis fuzzing (tests/e2e/test_fuzz_api.py): problems were declared with a
description only (no problem+json content), /metrics claimed application/json, and 400 (malformed
multipart), 413 (the JSON body limit), 429 (rate limits) and 503 (/readyz, a missing blob, the database
unreachable) were missing.
"""

from __future__ import annotations

import pytest

from service.errors import PROBLEM_JSON

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def spec(app):
    return app.openapi()


def operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def test_every_error_response_is_declared_as_problem_json(spec):
    seen = 0
    for path, method, operation in operations(spec):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                seen += 1
                content = response.get("content", {})
                assert list(content) == [PROBLEM_JSON], (method, path, status)
                # One shared component: generated clients get one Problem type, not one per operation.
                assert content[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert seen > 50
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    assert problem.get("additionalProperties", True) is not False  # problems carry more members


def test_every_v1_operation_declares_auth_validation_and_rate_limit_problems(spec):
    for path, method, operation in operations(spec):
        if path.startswith("/v1/"):
            assert {"401", "404", "422", "429", "503"} <= set(operation["responses"]), (method, path)
            assert "Retry-After" in operation["responses"]["429"]["headers"]
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


def test_every_post_declares_the_body_limit(spec):
    posts = [(path, op) for path, method, op in operations(spec) if method == "post"]
    assert len(posts) >= 6
    for path, operation in posts:
        assert "413" in operation["responses"], path


def test_uploads_declare_malformed_multipart_and_busy_validators(spec):
    for path in ("/v1/models/uploads", "/v1/datasets/uploads"):
        assert {"400", "413", "415", "503"} <= set(spec["paths"][path]["post"]["responses"]), path
    replay = spec["paths"]["/v1/models/uploads"]["post"]["responses"]["200"]
    assert replay["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ModelRead"}


def test_health_routes_declare_what_they_send(spec):
    assert list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    artifact = spec["paths"]["/v1/artifacts/{artifact_id}"]["get"]["responses"]
    assert {"application/octet-stream", "application/json", "image/png"} <= set(artifact["200"]["content"])
    assert "503" in artifact


def test_metrics_answer_with_the_declared_type(client):
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
