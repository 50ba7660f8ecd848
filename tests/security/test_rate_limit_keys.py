"""Rate limits that a flood of made-up keys cannot turn against real users.

A key is charged to its client address's bucket only once the database said it is not valid, and that
answer is remembered (bounded, for a while) so a repeated made-up key costs no query; a valid key is never
charged to the address, so 10,000 made-up keys from one address leave a valid key's first request alone.
The client address is the peer's, or the client that a trusted proxy (SBAUDIT_FORWARDED_ALLOW_IPS) names in
X-Forwarded-For. Requests go through the ASGI app in-process (httpx.ASGITransport) with a frozen clock.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import event

from service.app import create_app
from service.auth import UnknownKeys, create_key
from service.settings import Settings

LMS5 = {"preset": "LMS-5", "n_train": 100, "n_val": 10, "n_test": 10}


def make_app(settings: Settings, db, **overrides):
    app = create_app(settings.model_copy(update=overrides), db=db)
    app.state.clock = lambda: 1000.0  # no refill: every token spent stays spent
    return app


def client_from(app, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://sbaudit.test")


def count_key_queries(db) -> list[str]:
    queries: list[str] = []

    def note(_conn, _cursor, statement, *_args) -> None:
        if "FROM api_keys" in statement:
            queries.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    return queries


async def bare_get(app, path: str, headers: list[tuple[bytes, bytes]], peer: str) -> int:
    """One GET straight into the ASGI app: its status. (A tenth of what an httpx round trip costs in-process,
    which makes a 10,000-request flood quick.)"""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
        "client": (peer, 40000), "server": ("sbaudit.test", 80),
    }  # fmt: skip
    status = 0

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def test_ten_thousand_made_up_keys_from_one_address_leave_a_valid_keys_first_request_alone(settings, db):
    app = make_app(settings, db)  # the default limits: 50 requests/s, burst 100
    key, _ = create_key(db, owner="alice")

    async def main() -> tuple[list[int], list[int]]:
        flood = [
            await bare_get(
                app, "/v1/datasets", [(b"authorization", b"Bearer sbk_made-up-%d" % n)], "203.0.113.7"
            )
            for n in range(10_000)
        ]
        async with client_from(app, "203.0.113.7") as client:
            valid = {"Authorization": f"Bearer {key}"}
            first = [
                (await client.get("/v1/datasets", headers=valid)).status_code,
                (await client.post("/v1/datasets", json=LMS5, headers=valid)).status_code,
            ]
        return flood, first

    flood, first = asyncio.run(main())
    assert flood[:100] == [401] * 100 and set(flood[100:]) == {429}  # the address's burst, then its 429s
    assert first == [200, 202]


def test_a_repeated_made_up_key_is_looked_up_once(settings, db):
    app = make_app(settings, db)
    queries = count_key_queries(db)

    async def main() -> list[int]:
        async with client_from(app, "203.0.113.8") as client:
            headers = {"Authorization": "Bearer sbk_made-up"}
            return [(await client.get("/v1/datasets", headers=headers)).status_code for _ in range(120)]

    statuses = asyncio.run(main())
    assert statuses == [401] * 100 + [429] * 20  # charged to the address once found unknown
    assert len(queries) == 1


def test_a_valid_key_is_looked_up_once_and_never_charged_to_the_address(settings, db):
    app = make_app(settings, db, rate_limit_burst=3)
    key, _ = create_key(db, owner="alice")
    queries = count_key_queries(db)

    async def main() -> tuple[list[int], list[int]]:
        async with client_from(app, "203.0.113.9") as client:
            anonymous = [
                (await client.get("/v1/datasets")).status_code for _ in range(4)
            ]  # empties the address
            valid = {"Authorization": f"Bearer {key}"}
            return anonymous, [
                (await client.get("/v1/datasets", headers=valid)).status_code for _ in range(4)
            ]

    anonymous, valid = asyncio.run(main())
    assert anonymous == [401, 401, 401, 429]
    assert valid == [200, 200, 200, 429]  # the key's own burst of 3
    assert len(queries) == 1  # the rate limiter's lookup; the route found the key cached


def test_unknown_keys_are_forgotten_after_their_time_and_bounded_in_number():
    now = [0.0]
    unknown = UnknownKeys(ttl=30.0, max_entries=3, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        unknown.add(name)
    assert "a" in unknown  # now the most recently presented
    unknown.add("d")
    assert len(unknown) == 3 and "b" not in unknown and "a" in unknown
    now[0] = 31.0
    assert "a" not in unknown and "d" not in unknown


# The client address behind a proxy.


def test_a_trusted_proxy_names_the_client_and_each_client_has_its_own_bucket(settings, db):
    app = make_app(settings, db, rate_limit_burst=2, forwarded_allow_ips="10.0.0.0/8")

    async def main() -> dict[str, list[int]]:
        async with client_from(app, "10.1.2.3") as proxy:

            async def statuses(forwarded_for: str) -> list[int]:
                headers = {"X-Forwarded-For": forwarded_for}
                return [(await proxy.get("/v1/datasets", headers=headers)).status_code for _ in range(3)]

            return {
                "first": await statuses("198.51.100.1"),
                "second": await statuses("198.51.100.2"),
                # A client that puts a made-up hop in front of the header still is the address the proxy saw.
                "spoofing first": await statuses("192.0.2.55, 198.51.100.1"),
            }

    assert asyncio.run(main()) == {
        "first": [401, 401, 429],
        "second": [401, 401, 429],
        "spoofing first": [429, 429, 429],
    }


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(settings, db):
    app = make_app(settings, db, rate_limit_burst=2)  # the default: only 127.0.0.1 and ::1 are trusted

    async def main() -> tuple[list[int], list[int]]:
        async with client_from(app, "192.0.2.9") as client:
            spoofed = [
                (await client.get("/v1/datasets", headers={"X-Forwarded-For": f"198.51.100.{n}"})).status_code
                for n in range(3)
            ]
        async with client_from(app, "127.0.0.1") as local_proxy:
            forwarded = [
                (
                    await local_proxy.get("/v1/datasets", headers={"X-Forwarded-For": f"198.51.100.{n}"})
                ).status_code
                for n in range(3)
            ]
        return spoofed, forwarded

    spoofed, forwarded = asyncio.run(main())
    assert spoofed == [401, 401, 429]  # one client, however many addresses it claims
    assert forwarded == [401, 401, 401]  # three clients behind the local proxy


@pytest.mark.parametrize("value", ["10.0.0.1/8", "proxy.internal", "127.0.0.1,,::1", "*,10.0.0.1"])
def test_a_malformed_trusted_proxy_list_stops_the_start(clean_env, tmp_path, value):
    with pytest.raises(ValidationError, match="forwarded_allow_ips"):
        Settings(data_dir=tmp_path, forwarded_allow_ips=value)
