"""sbclient.Client against httpx.MockTransport: errors, retries, idempotency keys, pagination, the event
stream (with reconnects and the polling fallback) and atomic downloads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid

import httpx
import pytest

from sbclient import ApiError, Client, ClientError, ConnectionFailed, JobEvent

JOB = {"id": "job_1", "kind": "generate_dataset", "state": "queued", "progress": 0.0, "stage": None,
       "detail": None, "attempt": 1, "max_attempts": 3, "error": None, "resource_type": "dataset",
       "resource_id": "ds_1", "created_at": "2026-01-01T00:00:00Z", "started_at": None, "finished_at": None,
       "updated_at": "2026-01-01T00:00:00Z", "eta_seconds": None}  # fmt: skip


def job(**fields) -> dict:
    return {**JOB, **fields}


def problem(status: int, detail: str, errors=None) -> httpx.Response:
    body = {"type": "about:blank", "title": "Bad", "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def sse(*events: tuple[str, dict], retry: int = 10) -> httpx.Response:
    text = f"retry: {retry}\n\n" + "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events)
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream; charset=utf-8"})


@pytest.fixture
def no_sleep(monkeypatch):
    pauses: list[float] = []
    monkeypatch.setattr("sbclient.client.time.sleep", pauses.append)
    return pauses


def client_for(handler, **options) -> Client:
    return Client("http://sb.test", api_key="sbk_test", transport=httpx.MockTransport(handler), **options)


def test_url_and_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("SBAUDIT_URL", "http://elsewhere:9000/")
    monkeypatch.setenv("SBAUDIT_API_KEY", "sbk_env")
    seen = {}

    def handler(request):
        seen["url"], seen["auth"] = str(request.url), request.headers["authorization"]
        return httpx.Response(200, json=JOB)

    with Client(transport=httpx.MockTransport(handler)) as client:
        assert client.get_job("job_1") == JOB
    assert seen == {"url": "http://elsewhere:9000/v1/jobs/job_1", "auth": "Bearer sbk_env"}


def test_a_problem_becomes_a_one_line_api_error():
    errors = [{"field": "body.n_train", "message": "must be at most 1000000"}]
    client = client_for(lambda r: problem(422, "body.n_train: must be at most\n 1000000", errors))
    with pytest.raises(ApiError) as caught:
        client.create_dataset({"preset": "LMS-5", "n_train": 10**9})
    assert str(caught.value) == "422 body.n_train: must be at most 1000000"
    assert caught.value.status == 422 and caught.value.title == "Bad"
    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("body.n_train", "must be at most 1000000")
    ]


def test_a_non_json_error_is_shortened_to_one_line(no_sleep):
    client = client_for(lambda r: httpx.Response(500, text="<html>\n<b>oops</b>\n</html>"))
    with pytest.raises(ApiError, match=r"^500 <html> <b>oops</b> </html>$"):
        client.get_dataset("ds_1")


def test_reads_are_retried_on_502_503_504_and_connection_errors(no_sleep):
    answers = iter([httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(200, json=JOB)])

    def handler(request):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert client_for(handler).get_job("job_1") == JOB
    assert no_sleep == [0.25, 0.5]


def test_retries_give_up_with_a_line_naming_the_url(no_sleep):
    def handler(request):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(ConnectionFailed) as caught:
        client_for(handler, retries=2).get_dataset("ds_1")
    assert str(caught.value) == (
        "cannot reach http://sb.test: [Errno 111] Connection refused (is the server running?)"
    )
    assert len(no_sleep) == 2


def test_other_errors_are_not_retried(no_sleep):
    calls = []

    def handler(request):
        calls.append(request)
        return problem(404, "dataset 'ds_x' does not exist")

    with pytest.raises(ApiError, match="^404 dataset 'ds_x' does not exist$"):
        client_for(handler).get_dataset("ds_x")
    assert len(calls) == 1 and no_sleep == []


def test_creating_posts_carry_one_idempotency_key_across_retries(no_sleep):
    keys = []

    def handler(request):
        keys.append(request.headers["idempotency-key"])
        assert json.loads(request.content) == {"model_id": "mdl_1"}
        return httpx.Response(502) if len(keys) == 1 else httpx.Response(202, json={"id": "aud_1"})

    assert client_for(handler).run_audit({"model_id": "mdl_1"}) == {"id": "aud_1"}
    assert len(keys) == 2 and keys[0] == keys[1] and uuid.UUID(keys[0]).version == 4
    client_for(handler).train_model({"model_id": "mdl_1"}, idempotency_key="mine")
    assert keys[-1] == "mine"


def test_lists_follow_next_cursor():
    pages = {None: {"data": [{"id": "a"}, {"id": "b"}], "next_cursor": "c1"},
             "c1": {"data": [{"id": "c"}], "next_cursor": None}}  # fmt: skip
    seen = []

    def handler(request):
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    assert [d["id"] for d in client_for(handler).list_models(status="ready")] == ["a", "b", "c"]
    assert seen == [{"status": "ready"}, {"status": "ready", "cursor": "c1"}]


def test_events_end_with_the_final_job():
    running, done = job(state="running", progress=0.5), job(state="succeeded", progress=1.0)
    client = client_for(
        lambda r: sse(("job", JOB), ("job", running), ("job", done), ("end", {"state": "succeeded"}))
    )
    events = list(client.events("job_1"))
    assert events == [
        JobEvent("job", JOB),
        JobEvent("job", running),
        JobEvent("job", done),
        JobEvent("end", done),
    ]


def test_events_reconnect_after_a_dropped_connection(no_sleep):
    answers = iter([
        sse(("job", JOB)),  # closed without `end` (the server's lifetime, or a proxy)
        httpx.RemoteProtocolError("peer closed connection"),  # dropped: reopened once
        sse(("job", job(state="failed")), ("end", {"state": "failed"})),
    ])  # fmt: skip

    def handler(request):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    events = list(client_for(handler).events("job_1"))
    assert [(e.event, e.job["state"]) for e in events] == [
        ("job", "queued"),
        ("job", "failed"),
        ("end", "failed"),
    ]


def test_events_give_up_after_two_connections_in_a_row_without_events(no_sleep):
    def handler(request):
        raise httpx.ReadError("connection reset")

    with pytest.raises(ConnectionFailed, match="connection reset"):
        list(client_for(handler).events("job_1"))
    assert len(no_sleep) == 1


def test_wait_polls_where_the_server_has_no_event_stream(no_sleep):
    polls = iter([job(state="running", progress=0.5), job(state="running", progress=0.5),
                  job(state="succeeded", progress=1.0, updated_at="2026-01-01T00:01:00Z")])  # fmt: skip

    def handler(request):
        if request.url.path.endswith("/events"):
            return problem(404, "no route GET /v1/jobs/job_1/events")
        assert request.url.params["wait"] == "20.0"
        return httpx.Response(200, json=next(polls))

    seen: list[JobEvent] = []
    final = client_for(handler).wait("job_1", on_event=seen.append)
    assert final["state"] == "succeeded"
    assert [(e.event, e.job["state"]) for e in seen] == [
        ("job", "running"),
        ("job", "succeeded"),
        ("end", "succeeded"),
    ]


def test_wait_reports_an_unknown_job():
    with pytest.raises(ApiError, match="^404 job 'job_x' does not exist$"):
        client_for(lambda r: problem(404, "job 'job_x' does not exist")).wait("job_x")


def _artifact_handler(body: bytes, *, sha256: str | None = None, filename: str = "weights.safetensors"):
    def handler(request):
        headers = {"etag": f'"{sha256 or hashlib.sha256(body).hexdigest()}"',
                   "content-disposition": f'attachment; filename="{filename}"'}  # fmt: skip
        return httpx.Response(200, content=body, headers=headers)

    return handler


def test_download_into_a_folder_uses_the_served_name_without_any_path(tmp_path):
    client = client_for(_artifact_handler(b"weights", filename="../../etc/evil"))
    path = client.download_artifact("art_1", tmp_path)
    assert path == tmp_path / "evil" and path.read_bytes() == b"weights"
    assert (
        client_for(_artifact_handler(b"w2")).download_artifact("art_1", tmp_path / "mine.bin").read_bytes()
        == b"w2"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil", "mine.bin"]


def test_a_corrupted_or_refused_download_leaves_nothing(tmp_path):
    with pytest.raises(ClientError, match="corrupted"):
        client_for(_artifact_handler(b"weights", sha256="0" * 64)).download_artifact("art_1", tmp_path / "w")
    with pytest.raises(ApiError, match="^404 "):
        client_for(lambda r: problem(404, "artifact 'art_1' does not exist")).download_artifact(
            "art_1", tmp_path
        )
    assert list(tmp_path.iterdir()) == []


def test_uploads_send_json_fields_and_say_whether_they_created(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"tensor bytes")
    seen = {}

    def handler(request):
        seen["body"] = request.content
        return httpx.Response(200, json={"id": "mdl_1", "status": "ready"})

    upload = client_for(handler).upload_model(file, architecture={"name": "fcn"}, input_shape=[50])
    assert upload.resource["id"] == "mdl_1" and upload.created is False
    assert b'{"name": "fcn"}' in seen["body"] and b"[50]" in seen["body"] and b"tensor bytes" in seen["body"]
    with pytest.raises(ClientError, match="no such file"):
        client_for(handler).upload_dataset(tmp_path / "missing.npz", blocks=[])


def test_sbclient_needs_only_httpx():
    """A script that uses the client installs httpx, not the server or the engine."""
    banned = {"service", "worker", "torch", "pydantic", "sbengine"}
    code = f"import sys, sbclient; print(sorted({{m.split('.')[0] for m in sys.modules}} & {banned!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
