"""POST/GET /v1/datasets: validation (422 naming the field), 202 + Location, pagination, idempotency."""

from __future__ import annotations

import pytest
from service_testing import fields, problem

LMS5 = {"preset": "LMS-5", "n_train": 2000, "n_test": 500, "seed": 0}
BLOCKS = {
    "blocks": [{"type": "linear", "margin": 0.1}, {"type": "slab", "k": 5, "count": 49, "margin": 0.1}],
    "rotate": True,
    "n_train": 5000,
    "n_test": 1000,
    "seed": 3,
}


@pytest.mark.parametrize("body", [LMS5, BLOCKS])
def test_create_returns_202_with_location_and_job(client, auth, body):
    response = client.post("/v1/datasets", json=body, headers=auth)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["id"].startswith("ds_") and created["job_id"].startswith("job_")
    assert created["status"] == "queued"
    assert response.headers["location"] == f"/v1/datasets/{created['id']}"
    spec = client.get(response.headers["location"], headers=auth).json()["spec"]
    assert {k: spec[k] for k in body if k != "blocks"} == {k: v for k, v in body.items() if k != "blocks"}
    job = client.get(f"/v1/jobs/{created['job_id']}", headers=auth).json()
    assert job["kind"] == "generate_dataset" and job["state"] == "queued" and job["attempt"] == 1
    assert job["resource_id"] == created["id"] and job["progress"] == 0.0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**LMS5, "colour": "red"}, "body.colour"),
        ({**LMS5, "n_train": "100"}, "body.n_train"),
        ({**LMS5, "n_train": 1}, "body.n_train"),
        ({**LMS5, "n_train": 10**9}, "body.n_train"),
        ({**LMS5, "preset": "LMS-9"}, "body.preset"),
        ({**LMS5, "seed": -1}, "body.seed"),
        ({"blocks": [{"type": "slab", "k": 4}]}, "body.blocks.0.k"),
        ({"blocks": [{"type": "linear"}, {"type": "slab", "k": 7, "margin": 0.2}]}, "body.blocks.1.margin"),
        ({"blocks": [{"type": "noisy_linear", "noise": 1.5}]}, "body.blocks.0.noise"),
        ({"blocks": [{"type": "noise", "count": 0}]}, "body.blocks.0.count"),
        ({"blocks": [{"type": "noise", "margin": 0.1}]}, "body.blocks.0.margin"),
        ({"blocks": [{"type": "cube"}]}, "body.blocks.0"),
        ({"blocks": [{"type": "linear"}], "simple_blocks": [1]}, "body.simple_blocks"),
        ({"blocks": [{"type": "noise", "count": 5000}]}, "body.blocks"),
        ({"preset": "MNIST-CIFAR", "rotate": False}, "body.rotate"),
        ({**LMS5, "blocks": [{"type": "linear"}]}, "body"),
        ({}, "body"),
    ],
)
def test_bad_bodies_name_the_field(client, auth, body, field):
    response = client.post("/v1/datasets", json=body, headers=auth)
    assert field in fields(response)
    assert client.get("/v1/jobs", headers=auth).json()["data"] == [], "nothing may be queued"


def test_malformed_json_and_nan(client, auth):
    headers = {**auth, "Content-Type": "application/json"}
    assert fields(client.post("/v1/datasets", content=b'{"preset": "LMS-5",', headers=headers)) == ["body"]
    response = client.post(
        "/v1/datasets", content=b'{"blocks": [{"type": "linear", "margin": NaN}]}', headers=headers
    )
    assert "body.blocks.0.margin" in fields(response)


def test_unknown_routes_and_methods_are_problems(client, auth):
    problem(client.get("/v1/nothing", headers=auth), 404)
    problem(client.delete("/v1/jobs", headers=auth), 405)
    problem(client.get("/v1/datasets/not-an-id", headers=auth), 404)
    problem(client.get("/v1/datasets?limit=0", headers=auth), 422)


def test_list_is_paginated_newest_first(client, auth):
    ids = [client.post("/v1/datasets", json={**LMS5, "seed": i}, headers=auth).json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/datasets", params=params, headers=auth).json()
        assert len(page["data"]) <= 2
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert client.get("/v1/datasets", params={"status": "ready"}, headers=auth).json()["data"] == []
    assert "query.cursor" in fields(client.get("/v1/datasets", params={"cursor": "garbage!"}, headers=auth))


def test_idempotent_replay_returns_the_original_response(client, auth):
    headers = {**auth, "Idempotency-Key": "create-lms5-once"}
    first = client.post("/v1/datasets", json=LMS5, headers=headers)
    again = client.post("/v1/datasets", json=LMS5, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert len(client.get("/v1/jobs", headers=auth).json()["data"]) == 1
    # Same key, different request: refused, nothing created.
    other = client.post("/v1/datasets", json={**LMS5, "seed": 1}, headers=headers)
    assert problem(other, 422)["type"].endswith("idempotency-key-reused")
    assert len(client.get("/v1/jobs", headers=auth).json()["data"]) == 1
    # Keys are per owner and per key.
    fresh = client.post("/v1/datasets", json=LMS5, headers={**auth, "Idempotency-Key": "another"})
    assert fresh.json()["id"] != first.json()["id"]


def test_idempotency_key_is_validated(client, auth):
    response = client.post("/v1/datasets", json=LMS5, headers={**auth, "Idempotency-Key": "x" * 300})
    assert fields(response) == ["header.Idempotency-Key"]


def test_server_limits_are_configurable(settings, db, auth):
    from fastapi.testclient import TestClient

    from service.app import create_app

    small = settings.model_copy(update={"max_samples": 1000})
    with TestClient(create_app(small, db=db)) as client:
        assert "body.n_train" in fields(client.post("/v1/datasets", json=LMS5, headers=auth))
        sizes = {"n_train": 1000, "n_val": 100, "n_test": 100}  # n_val too: LMS-5's default is 10000
        ok = client.post("/v1/datasets", json={**LMS5, **sizes}, headers=auth)
        assert ok.status_code == 202


def test_oversized_bodies_are_refused_before_reading(client, auth):
    big = b'{"preset": "LMS-5", "name": "' + b"x" * (2 << 20) + b'"}'
    response = client.post("/v1/datasets", content=big, headers={**auth, "Content-Type": "application/json"})
    assert problem(response, 413)["detail"].startswith("the request body exceeds")

    def chunks():
        yield big[: 1 << 20]
        yield big[1 << 20 :]

    chunked = client.post(
        "/v1/datasets", content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    problem(chunked, 413)

    def small():
        yield b'{"preset": '
        yield b'"LMS-5"}'

    assert (
        client.post(
            "/v1/datasets", content=small(), headers={**auth, "Content-Type": "application/json"}
        ).status_code
        == 202
    )
