"""Rate limits per key: the burst passes, the next request is a 429 problem with Retry-After, tokens refill
with time (a fake clock), keys have their own buckets, job-creating POSTs have a budget of their own,
health endpoints are exempt, and a rate of 0 turns a limit off."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_testing import problem

from service.app import create_app
from service.auth import create_key
from service.ratelimit import Budget, TokenBuckets

LMS5 = {"preset": "LMS-5", "n_train": 100, "n_val": 10, "n_test": 10, "seed": 0}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(settings, db):
    """``limited(**settings) -> (client, clock)``: an app with these limits and a clock the test moves."""
    clients = []

    def make(**limits):
        app = create_app(settings.model_copy(update=limits), db=db)
        clock = FakeClock()
        app.state.clock = clock
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client, clock

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def bearer(db, owner: str) -> dict[str, str]:
    key, _ = create_key(db, owner=owner)
    return {"Authorization": f"Bearer {key}"}


def statuses(client, n: int, path: str = "/v1/datasets", **kwargs) -> list[int]:
    return [client.get(path, **kwargs).status_code for _ in range(n)]


def test_the_burst_passes_then_429_with_retry_after_and_refill(limited, db):
    client, clock = limited(rate_limit_per_second=2.0, rate_limit_burst=4)
    auth = bearer(db, "alice")
    assert statuses(client, 4, headers=auth) == [200] * 4
    body = problem(client.get("/v1/datasets", headers=auth), 429)
    assert body["type"] == "urn:sbaudit:problem:rate-limited"
    assert body["detail"] == "rate limit of 2 requests/s for this key exceeded; retry after 1 s"
    assert client.get("/v1/datasets", headers=auth).headers["retry-after"] == "1"

    clock.now += 0.25  # half a token
    assert client.get("/v1/datasets", headers=auth).status_code == 429
    clock.now += 0.25  # one token
    assert statuses(client, 2, headers=auth) == [200, 429]
    clock.now += 60  # refilled to the burst, not beyond
    assert statuses(client, 5, headers=auth) == [200] * 4 + [429]


def test_retry_after_is_whole_seconds_and_at_least_one(limited, db):
    client, _ = limited(rate_limit_per_second=0.1, rate_limit_burst=1)
    auth = bearer(db, "alice")
    assert client.get("/v1/datasets", headers=auth).status_code == 200
    response = client.get("/v1/datasets", headers=auth)
    assert response.status_code == 429 and response.headers["retry-after"] == "10"


def test_two_keys_have_their_own_buckets(limited, db):
    client, _ = limited(rate_limit_per_second=1.0, rate_limit_burst=5)
    alice, bob = bearer(db, "alice"), bearer(db, "bob")
    assert statuses(client, 6, headers=alice) == [200] * 5 + [429]
    assert statuses(client, 5, headers=bob) == [200] * 5


def test_unauthenticated_and_made_up_keys_share_the_client_address_budget(limited, db):
    client, _ = limited(rate_limit_per_second=1.0, rate_limit_burst=3)
    alice = bearer(db, "alice")
    assert client.get("/v1/datasets", headers=alice).status_code == 200  # a valid key: counted by key only
    made_up = [{"Authorization": f"Bearer sbk_made-up-{i}"} for i in range(3)]
    assert [client.get("/v1/datasets", headers=h).status_code for h in made_up] == [401] * 3
    body = problem(client.get("/v1/datasets", headers={"Authorization": "Bearer sbk_another"}), 429)
    assert "for this client exceeded" in body["detail"]
    problem(client.get("/v1/datasets"), 429)
    assert client.get("/v1/datasets", headers=alice).status_code == 200


def test_job_creating_posts_have_a_separate_budget(limited, db):
    client, clock = limited(
        rate_limit_per_second=1000.0,
        rate_limit_burst=1000,
        job_rate_limit_per_minute=6.0,
        job_rate_limit_burst=2,
    )
    auth = bearer(db, "alice")
    assert client.get("/v1/datasets", headers=auth).status_code == 200
    # Refused requests queue nothing, so they do not spend the job budget.
    assert [
        client.post("/v1/datasets", json={"preset": "nope"}, headers=auth).status_code for _ in range(5)
    ] == [422] * 5
    created = [client.post("/v1/datasets", json={**LMS5, "seed": i}, headers=auth) for i in range(2)]
    assert [r.status_code for r in created] == [202, 202]
    refused = client.post("/v1/datasets", json={**LMS5, "seed": 9}, headers=auth)
    body = problem(refused, 429)
    assert body["detail"] == (
        "rate limit of 6 job-creating requests/min for this key exceeded; retry after 10 s"
    )
    assert refused.headers["retry-after"] == "10"
    problem(client.post("/v1/audits", json={}, headers=auth), 429)  # every job-creating route shares it
    # Reads and other POSTs still pass; no job was created by the refused requests.
    jobs = client.get("/v1/jobs", headers=auth).json()["data"]
    assert len(jobs) == 2
    cancel = client.post(f"/v1/jobs/{jobs[0]['id']}/cancel", headers=auth)
    assert cancel.status_code != 429
    clock.now += 10
    assert client.post("/v1/datasets", json={**LMS5, "seed": 3}, headers=auth).status_code == 202


def test_health_endpoints_are_exempt(limited, db):
    client, _ = limited(rate_limit_per_second=1.0, rate_limit_burst=1)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert statuses(client, 5, path) == [200] * 5, path
    assert statuses(client, 2, "/openapi.json") == [200, 429]


def test_a_rate_of_zero_disables_the_limit(limited, db):
    client, _ = limited(rate_limit_per_second=0.0, rate_limit_burst=1, job_rate_limit_per_minute=0.0,
                        job_rate_limit_burst=1)  # fmt: skip
    auth = bearer(db, "alice")
    assert statuses(client, 30, headers=auth) == [200] * 30
    posts = [
        client.post("/v1/datasets", json={**LMS5, "seed": i}, headers=auth).status_code for i in range(5)
    ]
    assert posts == [202] * 5


def test_the_openapi_schema_declares_429(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "429" in paths["/v1/datasets"]["post"]["responses"]
    assert "429" in paths["/v1/jobs/{job_id}"]["get"]["responses"]


def test_the_number_of_buckets_is_bounded():
    clock = FakeClock()
    buckets = TokenBuckets(Budget(rate=1.0, burst=2, what="requests/s"), clock, max_buckets=3)
    for client in ("a", "b", "c", "d", "e"):
        assert buckets.wait(client) == 0.0
        buckets.take(client)
    assert len(buckets) == 3
    buckets.take("e")
    assert buckets.wait("e") == pytest.approx(1.0)  # the newest are kept
    assert buckets.wait("a") == 0.0  # an evicted client starts full again
