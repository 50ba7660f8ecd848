"""Per-key caps on open event streams (SBAUDIT_MAX_STREAMS_PER_KEY) and waiting long polls
(SBAUDIT_MAX_LONG_POLLS_PER_KEY): past the cap a 429 problem with Retry-After; a slot comes back when the
request ends, the client going away included.

The app runs under a real uvicorn in a thread (as in tests/service/test_job_events.py), and the requests are
written on raw sockets, so that a test can hang up on one the way a client that goes away does.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.auth import create_key
from service.settings import Settings


@pytest.fixture
def settings(tmp_path, clean_env) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        poll_interval_seconds=0.05,
        max_streams_per_key=2,
        max_long_polls_per_key=2,
    )


@pytest.fixture
def app(settings, db):
    return create_app(settings, db=db)  # no executor: a queued job stays queued


@pytest.fixture
def live_url(app) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def key(db) -> tuple[str, str]:
    """(plaintext, key id) of alice's key."""
    plaintext, row = create_key(db, owner="alice")
    return plaintext, row.id


def send_get(base_url: str, path: str, key: str) -> socket.socket:
    """A GET on a socket of its own, which the test closes to hang up mid-request."""
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    return sock


def read_status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before the status line: {head!r}"
        head += chunk
    return int(head.split(b" ", 2)[1])


def queued_job(base_url: str, key: str) -> str:
    response = httpx.post(
        f"{base_url}/v1/datasets", json={"preset": "LMS-5"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def assert_capped(response: httpx.Response, slug: str, setting: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["type"] == f"urn:sbaudit:problem:{slug}" and f"{setting}=2" in body["detail"]


def test_event_streams_past_the_cap_are_429_and_a_hang_up_frees_a_slot(live_url, app, db, key):
    plaintext, key_id = key
    auth = {"Authorization": f"Bearer {plaintext}"}
    job_id = queued_job(live_url, plaintext)
    path = f"/v1/jobs/{job_id}/events"
    streams = [send_get(live_url, path, plaintext) for _ in range(2)]
    assert [read_status(s) for s in streams] == [200, 200]
    assert app.state.streams.held(key_id) == 2

    assert_capped(httpx.get(live_url + path, headers=auth), "too-many-streams", "SBAUDIT_MAX_STREAMS_PER_KEY")
    other, _ = create_key(db, owner="bob")  # the cap is per key
    with httpx.stream("GET", f"{live_url}/v1/jobs/{queued_job(live_url, other)}/events",
                      headers={"Authorization": f"Bearer {other}"}, timeout=10) as response:  # fmt: skip
        assert response.status_code == 200

    streams[0].close()  # the client goes away
    eventually(lambda: app.state.streams.held(key_id) == 1, "the hung-up stream kept its slot")
    streams.append(send_get(live_url, path, plaintext))
    assert read_status(streams[-1]) == 200
    for stream in streams[1:]:
        stream.close()
    eventually(lambda: app.state.streams.held(key_id) == 0, "hung-up streams kept their slots")


def test_a_stream_that_ends_gives_its_slot_back(live_url, app, key):
    plaintext, key_id = key
    auth = {"Authorization": f"Bearer {plaintext}"}
    job_id = queued_job(live_url, plaintext)
    with httpx.stream("GET", f"{live_url}/v1/jobs/{job_id}/events", headers=auth, timeout=10) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("event: ")) == "event: job"
        assert app.state.streams.held(key_id) == 1
        assert httpx.post(f"{live_url}/v1/jobs/{job_id}/cancel", headers=auth).status_code == 202
        events = [line for line in lines if line.startswith("event: ")]
    assert events[-1] == "event: end"
    eventually(lambda: app.state.streams.held(key_id) == 0, "an ended stream kept its slot")
    # A finished job's stream ends at once and holds no slot: it is served even at the cap.
    finished = httpx.get(f"{live_url}/v1/jobs/{job_id}/events", headers=auth)
    assert finished.status_code == 200 and "event: end" in finished.text


def test_long_polls_past_the_cap_are_429_and_a_hang_up_frees_a_slot(live_url, app, key):
    plaintext, key_id = key
    auth = {"Authorization": f"Bearer {plaintext}"}
    job_id = queued_job(live_url, plaintext)
    path = f"/v1/jobs/{job_id}?wait=30"
    polls = [send_get(live_url, path, plaintext) for _ in range(2)]
    eventually(lambda: app.state.long_polls.held(key_id) == 2, "the long polls did not start waiting")

    assert_capped(
        httpx.get(live_url + path, headers=auth), "too-many-long-polls", "SBAUDIT_MAX_LONG_POLLS_PER_KEY"
    )
    plain = httpx.get(f"{live_url}/v1/jobs/{job_id}", headers=auth)  # without ?wait= there is no cap
    assert plain.status_code == 200 and plain.json()["state"] == "queued"

    for poll in polls:
        poll.close()  # the client goes away while its poll waits
    eventually(lambda: app.state.long_polls.held(key_id) == 0, "hung-up long polls kept their slots")

    def cancel_soon() -> None:
        time.sleep(0.3)
        httpx.post(f"{live_url}/v1/jobs/{job_id}/cancel", headers=auth)

    threading.Thread(target=cancel_soon).start()
    answered = httpx.get(live_url + path, headers=auth, timeout=35)
    assert answered.status_code == 200 and json.loads(answered.text)["state"] == "canceled"
    assert app.state.long_polls.held(key_id) == 0
