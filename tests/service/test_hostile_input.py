"""Hostile request bodies and parameters: each is refused with a 4xx problem naming what is wrong, before
any job is queued, and none reaches a 500.

Complements test_api_datasets.py (unknown fields, 10**9 samples, NaN in a block, the JSON body limit on
POST /v1/datasets) and the upload tests (multipart limits, 415).
"""

from __future__ import annotations

import json

import pytest
from service_testing import fields, problem

from sbserver.wiring import upload_validator_program
from service.schemas.datasets import BLOCKS_SIZES, PRESET_SIZES

LMS5 = {"preset": "LMS-5", "n_train": 2000, "n_test": 500, "seed": 0}
JSON = {"Content-Type": "application/json"}


def no_jobs(client, auth) -> bool:
    return client.get("/v1/jobs", headers=auth).json()["data"] == []


@pytest.fixture
def roomy_client(settings, db):
    """A server whose JSON body limit (64 MiB) lets 100,000-entry lists reach the schema checks."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(settings.model_copy(update={"max_json_bytes": 64 << 20}), db=db)) as client:
        yield client


@pytest.fixture
def model_body(ready_dataset):
    return lambda: {"dataset_id": ready_dataset(), "architecture": {"name": "fcn", "width": 20, "depth": 1}}


@pytest.mark.parametrize("route", ["/v1/datasets", "/v1/models", "/v1/audits"])
def test_oversized_json_is_413_on_every_create_route(client, auth, route):
    body = json.dumps({"name": "x" * (1 << 21)}).encode()
    response = client.post(route, content=body, headers={**auth, **JSON})
    assert problem(response, 413)["type"].endswith("too-large")
    assert no_jobs(client, auth)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"preset": "LMS-5", "name": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"preset": "LMS-5", "name": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
    ],
    ids=["array", "in-a-field", "objects"],
)
def test_deeply_nested_json_is_422_not_a_recursion_error(client, auth, body):
    response = client.post("/v1/datasets", content=body, headers={**auth, **JSON})
    assert fields(response) == ["body"]
    assert "nested too deeply" in response.json()["detail"]
    assert no_jobs(client, auth)


def test_nesting_within_the_parser_limit_is_an_ordinary_422(client, auth):
    body = b'{"preset": "LMS-5", "name": ' + b"[" * 500 + b"]" * 500 + b"}"
    assert fields(client.post("/v1/datasets", content=body, headers={**auth, **JSON})) == ["body.name"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**LMS5, "n_train": 10**12}, "body.n_train"),
        ({**LMS5, "n_val": 10**40}, "body.n_val"),
        ({**LMS5, "seed": 2**64}, "body.seed"),
        ({"blocks": [{"type": "noise", "count": 10**12}]}, "body.blocks.0.count"),
        ({**LMS5, "name": "x" * 10**6}, "body.name"),
        ({**LMS5, "width": 1e308}, "body.width"),
    ],
    ids=["n_train", "n_val", "seed", "block-count", "1M-char-name", "width"],
)
def test_huge_dataset_parameters_name_the_field(client, auth, body, field):
    assert field in fields(client.post("/v1/datasets", json=body, headers=auth))
    assert no_jobs(client, auth)


def test_a_list_of_100k_blocks_names_the_field(client, roomy_client, auth):
    body = {"blocks": [{"type": "linear"}] * 100_000}
    assert problem(client.post("/v1/datasets", json=body, headers=auth), 413)
    assert "body.blocks" in fields(roomy_client.post("/v1/datasets", json=body, headers=auth))
    assert no_jobs(client, auth)


def test_an_integer_too_long_to_parse_is_a_422_on_the_body(client, auth):
    body = b'{"preset": "LMS-5", "n_train": ' + b"9" * 5000 + b"}"
    response = client.post("/v1/datasets", content=body, headers={**auth, **JSON})
    assert fields(response) == ["body"]
    assert no_jobs(client, auth)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"architecture": {"name": "fcn", "width": 10**9}}, "body.architecture.width"),
        ({"architecture": {"name": "fcn", "depth": 10**9}}, "body.architecture.depth"),
        ({"architecture": {"name": "cnn1d", "filters": 10**9}}, "body.architecture.filters"),
        ({"ensemble_size": 10**6}, "body.ensemble_size"),
        ({"training": {"batch_size": 10**12}}, "body.training.batch_size"),
        ({"training": {"stop": {"max_updates": 10**18}}}, "body.training.stop.max_updates"),
        ({"training": {"stop": {"max_epochs": 10**18}}}, "body.training.stop.max_epochs"),
        ({"name": "m" * 10**6}, "body.name"),
    ],
)
def test_huge_model_parameters_name_the_field(client, auth, model_body, change, field):
    response = client.post("/v1/models", json={**model_body(), **change}, headers=auth)
    assert field in fields(response)
    assert no_jobs(client, auth)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"repeats": 10**12}, "body.repeats"),
        ({"simple_blocks": list(range(100_000))}, "body.simple_blocks"),
        ({"model_id": None, "model_ids": [f"mdl_{i:016d}" for i in range(100_000)]}, "body.model_ids"),
        ({"checks": ["randomization"] * 100_000}, "body.checks"),
        ({"checks": ["pgd"], "options": {"pgd": {"steps": 10**9}}}, "body.options.pgd.steps"),
    ],
)
def test_huge_audit_parameters_name_the_field(roomy_client, auth, ready_model, change, field):
    body = {key: value for key, value in {"model_id": ready_model(), **change}.items() if value is not None}
    assert field in fields(roomy_client.post("/v1/audits", json=body, headers=auth))
    assert no_jobs(roomy_client, auth)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/datasets", {"limit": str(10**30)}, "query.limit"),
        ("/v1/jobs", {"limit": "-1"}, "query.limit"),
        ("/v1/models", {"cursor": "c" * 10**4}, "query.cursor"),
        ("/v1/jobs/job_AAAAAAAAAAAAAAAA", {"wait": "1e309"}, "query.wait"),
        ("/v1/jobs/job_AAAAAAAAAAAAAAAA", {"wait": "nan"}, "query.wait"),
    ],
)
def test_huge_and_non_finite_query_parameters_name_the_parameter(client, auth, path, params, field):
    assert field in fields(client.get(path, params=params, headers=auth))


@pytest.mark.parametrize(
    ("route", "content_type", "content"),
    [
        ("/v1/datasets", "text/plain", json.dumps(LMS5).encode()),
        ("/v1/datasets", "application/x-www-form-urlencoded", b"preset=LMS-5&n_train=2000"),
        ("/v1/datasets", "multipart/form-data; boundary=x",
         b'--x\r\nContent-Disposition: form-data; name="preset"' b"\r\n\r\nLMS-5\r\n--x--\r\n"),
        ("/v1/models", "application/xml", b"<model/>"),
        ("/v1/audits", "application/octet-stream", b"\x00\x01\x02"),
    ],
)  # fmt: skip
def test_wrong_content_types_are_refused_without_a_job(client, auth, route, content_type, content):
    response = client.post(route, content=content, headers={**auth, "Content-Type": content_type})
    assert fields(response) == ["body"]
    assert no_jobs(client, auth)


@pytest.mark.parametrize(
    "content",
    [b'{"preset": "LMS-5", "name": "\xff\xfe"}', b"\xc3\x28"],
    ids=["in-a-string", "whole-body"],
)
def test_invalid_utf8_is_422_on_the_body(client, auth, content):
    response = client.post("/v1/datasets", content=content, headers={**auth, **JSON})
    assert fields(response) == ["body"]
    assert "UTF-8" in response.json()["detail"]
    assert no_jobs(client, auth)


@pytest.mark.parametrize("name", [b'"\\ud800"', b'"a\xed\xa0\x80"'], ids=["escaped", "encoded"])
def test_a_lone_surrogate_is_not_a_string(client, auth, name):
    """JSON can spell a lone UTF-16 surrogate (and the parser lets an encoded one through): no valid text."""
    body = b'{"preset": "LMS-5", "n_train": 100, "n_test": 10, "name": ' + name + b"}"
    assert fields(client.post("/v1/datasets", content=body, headers={**auth, **JSON})) == ["body.name"]
    assert no_jobs(client, auth)


@pytest.mark.parametrize(
    ("route", "raw", "field"),
    [
        ("/v1/datasets", b'{"preset": "LMS-5", "width": Infinity}', "body.width"),
        ("/v1/datasets", b'{"preset": "LMS-5", "width": -Infinity}', "body.width"),
        ("/v1/models", b'{"dataset_id": "DS", "architecture": {"name": "fcn"}, "training": {"lr": NaN}}',
         "body.training.lr"),
        ("/v1/audits", b'{"model_id": "MDL", "checks": ["pgd"], "options": {"pgd": {"eps": Infinity}}}',
         "body.options.pgd.eps"),
    ],
)  # fmt: skip
def test_nan_and_infinity_are_refused(client, auth, ready_model, route, raw, field):
    model_id = ready_model()
    raw = raw.replace(b"MDL", model_id.encode()).replace(b"DS", b"ds_AAAAAAAAAAAAAAAA")
    assert field in fields(client.post(route, content=raw, headers={**auth, **JSON}))
    assert no_jobs(client, auth)


@pytest.mark.parametrize(("preset", "sizes"), [*PRESET_SIZES.items(), (None, BLOCKS_SIZES)])
def test_default_sizes_count_against_the_sample_limit(settings, db, auth, preset, sizes):
    """A request that leaves the sizes out gets the preset's (up to 100,000 rows): the limit applies."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    body = {"preset": preset} if preset else {"blocks": [{"type": "linear"}, {"type": "slab", "k": 5}]}
    small = settings.model_copy(update={"max_samples": max(sizes) - 1})
    with TestClient(create_app(small, db=db, upload_validator=upload_validator_program())) as client:
        response = client.post("/v1/datasets", json=body, headers=auth)
        assert fields(response) == ["body.n_train"]
        assert "give n_train explicitly" in response.json()["detail"]
        assert no_jobs(client, auth)
        explicit = {**body, "n_train": 100, "n_val": 10, "n_test": 10}
        assert client.post("/v1/datasets", json=explicit, headers=auth).status_code == 202


def test_default_sizes_mirror_the_engine():
    presets = pytest.importorskip("sbengine.data.presets")
    from sbengine.data.synthetic import SyntheticSpec

    engine = {name: (p.n_train, p.n_val, p.n_test) for name, p in presets.SYNTHETIC_PRESETS.items()}
    assert engine == PRESET_SIZES
    spec = SyntheticSpec(blocks=[])
    assert (spec.n_train, spec.n_val, spec.n_test) == BLOCKS_SIZES


def test_the_ensemble_size_limit_is_configurable(settings, db, auth, ready_dataset):
    from fastapi.testclient import TestClient

    from service.app import create_app

    small = settings.model_copy(update={"max_ensemble_size": 4})
    body = {"dataset_id": ready_dataset(), "architecture": {"name": "fcn", "width": 20, "depth": 1}}
    with TestClient(create_app(small, db=db, upload_validator=upload_validator_program())) as client:
        response = client.post("/v1/models", json={**body, "ensemble_size": 5}, headers=auth)
        assert fields(response) == ["body.ensemble_size"]
        assert "SBAUDIT_MAX_ENSEMBLE_SIZE" in response.json()["detail"]
        assert no_jobs(client, auth)
        assert client.post("/v1/models", json={**body, "ensemble_size": 4}, headers=auth).status_code == 202


@pytest.mark.parametrize(
    ("route", "form", "field"),
    [
        ("/v1/models/uploads", {"architecture": "[" * 10_000 + "]" * 10_000}, "body.architecture"),
        ("/v1/datasets/uploads", {"blocks": '{"a":' * 10_000 + "1" + "}" * 10_000}, "body.blocks"),
        (
            "/v1/models/uploads",
            {"architecture": '{"name": "fcn"}', "num_classes": "9" * 5000},
            "body.num_classes",
        ),
    ],
    ids=["nested-architecture", "nested-blocks", "5000-digit-int"],
)
def test_hostile_upload_form_fields_name_the_field(client, auth, route, form, field):
    """The JSON-valued form fields are parsed by the route, not FastAPI: the same limits hold there."""
    files = {"file": ("upload.bin", b"\x00" * 16, "application/octet-stream")}
    response = client.post(route, data=form, files=files, headers=auth)
    assert fields(response) == [field]
    assert no_jobs(client, auth)
