"""GET /v1/jobs/{id}/events: Server-Sent Events that follow a job row until it ends.

The streaming tests run the app under a real uvicorn in a thread (the in-process test clients buffer a
whole response, which would hide a stream that never flushes); the stream logic itself is also driven
directly with a fake job reader, which makes keep-alives and lifetimes quick to check.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
import uvicorn
from service_testing import problem

from service import jobstore
from service.routes.jobs import job_event_stream
from service.schemas.jobs import JobRead
from service.settings import Settings


@pytest.fixture
def settings(tmp_path, clean_env) -> Settings:
    return Settings(data_dir=tmp_path / "data", poll_interval_seconds=0.05)


@pytest.fixture
def live_url(app) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
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


def read_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(field, value) blocks of an event stream, one tuple per event or comment, without a parser of ours:
    ``("retry", "2000")``, ``("job", "<json>")``, ``(":", " keep-alive")``."""
    block: list[str] = []
    for line in lines:
        if line:
            block.append(line)
            continue
        if not block:
            continue
        if block[0].startswith(":"):
            yield ":", block[0][1:]
        elif block[0].startswith("retry:"):
            yield "retry", block[0].split(":", 1)[1].strip()
        else:
            assert block[0].startswith("event: ") and block[1].startswith("data: "), block
            yield block[0][len("event: ") :], block[1][len("data: ") :]
        block = []


def _queue_dataset(base_url: str, auth: dict[str, str]) -> dict:
    response = httpx.post(f"{base_url}/v1/datasets", json={"preset": "LMS-5"}, headers=auth)
    assert response.status_code == 202, response.text
    return response.json()


def test_the_stream_follows_a_job_to_its_end(live_url, auth, db):
    created = _queue_dataset(live_url, auth)
    job_id = created["job_id"]
    url = f"{live_url}/v1/jobs/{job_id}/events"
    with httpx.stream("GET", url, headers=auth, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        events = read_events(response.iter_lines())
        assert next(events) == ("retry", "2000")
        # The first event arrives before anything changes: the stream is not buffered.
        name, data = next(events)
        queued = json.loads(data)
        assert name == "job" and queued["id"] == job_id and queued["state"] == "queued"
        assert queued["eta_seconds"] is None

        assert jobstore.claim_job(db, job_id=job_id, worker_id="w1", lease_seconds=30)
        name, data = next(events)
        assert (name, json.loads(data)["state"]) == ("job", "running")

        time.sleep(0.05)  # some elapsed time for the estimate
        jobstore.renew_lease(
            db, job_id=job_id, worker_id="w1", lease_seconds=30, progress=0.5, stage="train",
            detail={"step": 50, "total": 100, "metrics": {"train_accuracy": 0.9}},
        )  # fmt: skip
        name, data = next(events)
        halfway = json.loads(data)
        assert name == "job" and halfway["progress"] == 0.5 and halfway["stage"] == "train"
        assert halfway["detail"]["step"] == 50 and halfway["eta_seconds"] > 0

        assert jobstore.end_job(db, job_id=job_id, worker_id="w1", state="failed", error="boom")
        name, data = next(events)
        assert name == "job" and json.loads(data)["state"] == "failed" and json.loads(data)["error"] == "boom"
        assert next(events) == ("end", '{"state": "failed"}')
        assert list(events) == []  # the server closed the stream


def test_a_finished_job_streams_one_event_and_ends(client, auth):
    created = client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth).json()
    client.post(f"/v1/jobs/{created['job_id']}/cancel", headers=auth)
    response = client.get(f"/v1/jobs/{created['job_id']}/events", headers=auth)
    assert response.status_code == 200
    events = list(read_events(iter(response.text.split("\n"))))
    assert [name for name, _ in events] == ["retry", "job", "end"]
    assert json.loads(events[1][1])["state"] == "canceled"
    assert json.loads(events[2][1]) == {"state": "canceled"}


def test_the_stream_closes_at_its_maximum_lifetime_without_end(client, app, auth):
    app.state.settings.events_max_seconds = 0.3
    created = client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth).json()
    started = time.monotonic()
    response = client.get(f"/v1/jobs/{created['job_id']}/events", headers=auth)
    assert response.status_code == 200
    assert 0.25 < time.monotonic() - started < 5
    events = list(read_events(iter(response.text.split("\n"))))
    assert [name for name, _ in events] == ["retry", "job"]


def test_a_database_outage_mid_stream_only_pauses_it(client, app, auth, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from service.routes import jobs

    app.state.settings.events_max_seconds = 0.5
    created = client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth).json()
    real, calls = jobs._read_job, []

    def flaky(*args):
        calls.append(1)
        if len(calls) > 1:
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return real(*args)

    monkeypatch.setattr(jobs, "_read_job", flaky)
    response = client.get(f"/v1/jobs/{created['job_id']}/events", headers=auth)
    assert response.status_code == 200 and len(calls) > 1
    events = list(read_events(iter(response.text.split("\n"))))
    assert [name for name, _ in events] == ["retry", "job"]


def test_auth_and_ownership(client, auth, other_auth):
    created = client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth).json()
    url = f"/v1/jobs/{created['job_id']}/events"
    problem(client.get(url), 401)
    problem(client.get(url, headers={"Authorization": "Bearer sbk_nope"}), 401)
    problem(client.get(url, headers=other_auth), 404)
    problem(client.get("/v1/jobs/not-a-job/events", headers=auth), 404)
    problem(client.get("/v1/jobs/job_AAAAAAAAAAAAAAAA/events", headers=auth), 404)


def test_documented_in_openapi(client):
    operation = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert operation["summary"]
    job = client.get("/openapi.json").json()["components"]["schemas"]["JobRead"]
    assert "eta_seconds" in job["properties"]


# --- the stream itself, with a fake reader ----------------------------------------------------------


def _job(**fields) -> JobRead:
    now = "2026-01-01T00:00:00Z"
    base = dict(id="job_x", kind="generate_dataset", state="queued", progress=0.0, attempt=1, max_attempts=3,
                error=None, resource_type="dataset", resource_id="ds_x", created_at=now, started_at=None,
                finished_at=None, updated_at=now)  # fmt: skip
    return JobRead.model_validate({**base, **fields})


def _collect(jobs: list[JobRead | None], *, disconnected_after: int = 10**9, **options) -> list[str]:
    """Run the stream over a fixed sequence of reads (the last one repeats)."""
    reads = iter(jobs)
    last: list[JobRead | None] = []
    polls = 0

    async def read():
        nonlocal polls
        polls += 1
        last[:] = [next(reads, last[0] if last else None)]
        return last[0]

    async def is_disconnected():
        return polls >= disconnected_after

    async def run() -> list[str]:
        return [chunk async for chunk in job_event_stream(read, is_disconnected, **options)]

    return anyio.run(run)


def test_unchanged_jobs_send_keep_alive_comments_until_the_lifetime_ends():
    chunks = _collect([_job()], poll_seconds=0.01, max_seconds=0.2, keepalive_seconds=0.05)
    assert chunks[0] == "retry: 2000\n\n" and chunks[1].startswith("event: job\ndata: {")
    assert chunks.count(": keep-alive\n\n") >= 2
    assert sum(c.startswith("event: job") for c in chunks) == 1
    assert not any(c.startswith("event: end") for c in chunks)


def test_every_change_is_an_event_and_a_terminal_state_ends_the_stream():
    jobs = [_job(), _job(), _job(state="running", progress=0.1), _job(state="running", progress=0.1),
            _job(state="running", progress=0.2, stage="train"), _job(state="succeeded", progress=1.0),
            _job(state="succeeded", progress=1.0)]  # fmt: skip
    chunks = _collect(jobs, poll_seconds=0.001, max_seconds=10)
    states = [json.loads(c.split("data: ", 1)[1])["progress"] for c in chunks if c.startswith("event: job")]
    assert states == [0.0, 0.1, 0.2, 1.0]
    assert chunks[-1] == 'event: end\ndata: {"state": "succeeded"}\n\n'


def test_the_stream_stops_when_the_client_leaves_or_the_job_is_gone():
    chunks = _collect([_job()], disconnected_after=1, poll_seconds=0.01, max_seconds=10)
    assert len(chunks) == 2 and chunks[1].startswith("event: job")
    chunks = _collect([_job(), None], poll_seconds=0.01, max_seconds=10)
    assert len(chunks) == 2


def test_eta_extrapolates_the_time_so_far_only_while_running():
    started = (datetime.now(UTC) - timedelta(seconds=10)).isoformat()
    halfway = _job(state="running", progress=0.5, started_at=started)
    assert 9 < halfway.eta_seconds < 12
    assert 25 < _job(state="running", progress=0.25, started_at=started).eta_seconds < 35
    for job in (_job(state="running", progress=0.005, started_at=started),  # too early to say
                _job(state="running", progress=1.0, started_at=started),
                _job(state="canceling", progress=0.5, started_at=started), _job(state="queued")):  # fmt: skip
        assert job.eta_seconds is None
    assert json.loads(halfway.model_dump_json())["eta_seconds"] > 9


def test_listed_jobs_carry_the_eta_too(client, auth, db):
    created = client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth).json()
    jobstore.claim_job(db, job_id=created["job_id"], worker_id="w1", lease_seconds=30)
    jobstore.renew_lease(db, job_id=created["job_id"], worker_id="w1", lease_seconds=30, progress=0.5)
    (listed,) = client.get("/v1/jobs", headers=auth).json()["data"]
    assert listed["id"] == created["job_id"] and listed["eta_seconds"] is not None


def test_the_stream_ends_when_told_the_job_ended(live_url, app, auth, db):
    """With the re-read interval made an hour, only the executor's notification (embedded mode: the job's
    process ended) gets the end of the job onto the stream."""
    app.state.settings.poll_interval_seconds = 3600.0
    job_id = _queue_dataset(live_url, auth)["job_id"]
    with httpx.stream("GET", f"{live_url}/v1/jobs/{job_id}/events", headers=auth, timeout=30) as response:
        events = read_events(response.iter_lines())
        assert next(events) == ("retry", "2000")
        assert next(events)[0] == "job"
        deadline = time.monotonic() + 30
        while app.state.job_ends.waiting() != 1:
            assert time.monotonic() < deadline, "the stream never slept on the job"
            time.sleep(0.01)
        assert jobstore.claim_job(db, job_id=job_id, worker_id="w1", lease_seconds=30)
        assert jobstore.end_job(db, job_id=job_id, worker_id="w1", state="failed", error="boom")
        app.state.job_ends.notify(job_id)
        name, data = next(events)
        assert name == "job" and json.loads(data)["state"] == "failed"
        assert next(events) == ("end", '{"state": "failed"}')
