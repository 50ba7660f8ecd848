"""The client commands (``sbaudit datasets|models|audits|jobs|artifacts ...``) against a fake server
(httpx.MockTransport): what they send, what they print, their exit codes and their one-line errors."""

from __future__ import annotations

import io
import json
import uuid

import httpx
import pytest

from sbclient import Client
from sbclient.cli import connect as cli_connect
from sbclient.cli.entry import build_parser, main

NOW = "2026-01-01T00:00:00Z"
JOB = {"id": "job_1", "kind": "run_audit", "state": "queued", "progress": 0.0, "stage": None, "detail": None,
       "attempt": 1, "max_attempts": 3, "error": None, "resource_type": "audit", "resource_id": "aud_1",
       "created_at": NOW, "started_at": None, "finished_at": None, "updated_at": NOW,
       "eta_seconds": None}  # fmt: skip
RUNNING = {**JOB, "state": "running", "progress": 0.4, "stage": "randomization", "eta_seconds": 12.0,
           "detail": {"step": 2, "total": 5, "metrics": {"auc": 0.97}},
           "updated_at": "2026-01-01T00:00:01Z"}  # fmt: skip
RESULTS = {
    "randomization": {
        "repeats": 2, "split": "test", "auc": 1.0, "accuracy": 0.996, "loss": 0.05,
        "s_randomized_auc": {"mean": 0.53, "std": 0.022}, "sc_randomized_auc": {"mean": 1.0, "std": 0.0},
        "s_randomized_accuracy": {"mean": 0.518, "std": 0.017},
        "sc_randomized_accuracy": {"mean": 0.999, "std": 0.001},
    },
    "feature_dependence": {"random": [
        {"group": f"coordinate {i}", "coordinates": 1, "auc": 1.0 - i / 100, "accuracy": 0.9}
        for i in range(8)
    ] + [{"group": "block 0: linear", "coordinates": 1, "auc": 0.449, "accuracy": 0.452}]},
    "pgd": {"config": {"norm": "l2", "eps": 2.0, "steps": 5}, "clean_accuracy": 0.996, "accuracy": 0.008,
            "block_share": {"linear": {"mean": 0.987, "std": 0.004},
                            "49x 5-slab": {"mean": 0.162, "std": 0.02}}},
    "uap": {"method": "sgd", "norm": "l2", "eps": 1.0, "accuracy": 0.024, "fooling_rate": 0.972,
            "block_share": {"linear": 0.995, "49x 5-slab": 0.097}},
    "generalization": {"accuracy": 0.996, "bayes_accuracy_s": 1.0, "bayes_accuracy_sc": 1.0,
                       "bayes_accuracy_all": 1.0, "summary": "accuracy 0.996 reaches what S^c alone allows"},
    "ensemble": {"size": 2, "combine": "logits", "summary": "ensemble of 2 (logits): exclusively_simple",
                 "ensemble": {"test_accuracy": 0.99, "auc": 1.0,
                              "s_randomized_auc": {"mean": 0.5, "std": 0.01},
                              "sc_randomized_auc": {"mean": 1.0, "std": 0.0},
                              "verdict_code": "exclusively_simple"},
                 "members": [{"test_accuracy": 0.98, "auc": 0.99, "verdict_code": "exclusively_simple"}]},
}  # fmt: skip
AUDIT = {"id": "aud_1", "name": None, "status": "ready", "job_id": "job_1", "error": None, "artifacts": [],
         "created_at": NOW, "updated_at": NOW, "model_id": "mdl_1", "model_ids": None, "ensemble_size": 1,
         "combine": None, "dataset_id": "ds_1", "checks": list(RESULTS), "options": {}, "simple_blocks": [0],
         "split": "test", "repeats": 2, "seed": 0, "verdict_code": "exclusively_simple",
         "verdict": "relies exclusively on S (linear) — simplicity bias", "results": RESULTS}  # fmt: skip


def sse(*events: tuple[str, dict]) -> httpx.Response:
    text = "retry: 10\n\n: keep-alive\n\n" + "".join(
        f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events
    )
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream; charset=utf-8"})


def problem(status: int, detail: str) -> httpx.Response:
    body = {"type": "about:blank", "title": "Error", "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


class FakeServer:
    """Answers by (method, path), with the next of a list of answers (the last one repeats); records every
    request."""

    def __init__(self, routes: dict[tuple[str, str], httpx.Response | list[httpx.Response]]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return problem(404, f"no route {request.method} {request.url.path}")
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer

    def json_sent(self, method: str, path: str) -> dict:
        return next(json.loads(r.content) for r in self.requests if (r.method, r.url.path) == (method, path))


@pytest.fixture
def server(monkeypatch, clean_env):
    """Install a FakeServer (set its routes) behind every client command."""
    fake = FakeServer({})
    monkeypatch.setattr("sbclient.client.time.sleep", lambda s: None)
    monkeypatch.setattr(
        cli_connect,
        "open_client",
        lambda args: Client("http://sb.test", api_key="sbk_t", transport=httpx.MockTransport(fake)),
    )
    return fake


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_group_is_registered_once_with_its_actions():
    parser = build_parser()
    groups = {a.dest: a for a in parser._subparsers._group_actions[0]._choices_actions}
    assert {"datasets", "models", "audits", "jobs", "artifacts"} <= set(groups)
    args = parser.parse_args(["datasets", "create", "--preset", "LMS-5", "--n-train", "2000", "--no-rotate",
                              "--wait", "--json"])  # fmt: skip
    assert (args.preset, args.n_train, args.rotate, args.wait, args.json) == (
        "LMS-5",
        2000,
        False,
        True,
        True,
    )
    args = parser.parse_args(["models", "upload", "m.pt", "--architecture", "{}", "--input-shape", "50"])
    assert args.input_shape == "50" and args.handler.__name__ == "run_model_upload"
    assert (
        parser.parse_args(["datasets", "upload", "d.npz", "--blocks", "[]"]).handler.__name__
        == "run_dataset_upload"
    )
    for argv in (
        ["jobs", "watch", "job_1"],
        ["artifacts", "get", "art_1", "-o", "x"],
        ["audits", "report", "a"],
    ):
        assert callable(parser.parse_args(argv).handler)


def test_preset_and_blocks_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["datasets", "create", "--preset", "LMS-5", "--blocks", "[]"])
    assert caught.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_datasets_create_sends_the_options_over_body(server, capsys):
    server.routes[("POST", "/v1/datasets")] = httpx.Response(
        202, json={"id": "ds_1", "status": "queued", "job_id": "job_1"}
    )
    code, out, _ = run(capsys, "datasets", "create", "--body", '{"preset": "LMS-7", "n_val": 5, "seed": 3}',
                       "--preset", "LMS-5", "--n-train", "2000", "--no-rotate", "--simple-blocks", "0",
                       "--name", "x")  # fmt: skip
    assert code == 0
    assert server.json_sent("POST", "/v1/datasets") == {
        "preset": "LMS-5", "n_val": 5, "seed": 3, "n_train": 2000, "rotate": False, "simple_blocks": [0],
        "name": "x"
    }  # fmt: skip
    uuid.UUID(server.requests[0].headers["idempotency-key"])
    assert out.startswith("dataset ds_1 queued (job job_1)") and "sbaudit jobs watch job_1" in out


def test_models_train_builds_the_training_config(server, capsys):
    server.routes[("POST", "/v1/models")] = httpx.Response(
        202, json={"id": "mdl_1", "status": "queued", "job_id": "j"}
    )
    code, out, _ = run(capsys, "models", "train", "--dataset-id", "ds_1", "--architecture", "fcn",
                       "--training", '{"lr": 0.1}',
                       "--adversarial", '{"attack": {"eps": 0.3, "step_size": 0.1}}',
                       "--ensemble-size", "3", "--seed", "2", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["id"] == "mdl_1"
    assert server.json_sent("POST", "/v1/models") == {
        "dataset_id": "ds_1", "architecture": {"name": "fcn"}, "ensemble_size": 3, "seed": 2,
        "training": {"lr": 0.1, "adversarial": {"attack": {"eps": 0.3, "step_size": 0.1}}},
    }  # fmt: skip


def test_a_refusal_is_one_line_and_exit_status_2(server, capsys):
    server.routes[("POST", "/v1/audits")] = problem(422, "body.repeats: must be at most 100")
    code, out, err = run(capsys, "audits", "run", "--model-id", "mdl_1", "--repeats", "1000")
    assert (code, out) == (2, "")
    assert err == "sbaudit: error: 422 body.repeats: must be at most 100\n"
    code, _, err = run(capsys, "audits", "run", "--model-id", "mdl_1", "--options", "{nope")
    assert code == 2 and err.startswith("sbaudit: error: --options: not valid JSON") and err.count("\n") == 1


def test_no_key_and_no_server_are_one_line_each(capsys, clean_env, monkeypatch):
    code, _, err = run(capsys, "datasets", "list")
    assert (code, err) == (2, "sbaudit: error: no API key: pass --key or set SBAUDIT_API_KEY\n")
    monkeypatch.setattr("sbclient.client.time.sleep", lambda s: None)
    code, _, err = run(capsys, "jobs", "show", "job_1", "--url", "http://127.0.0.1:1", "--key", "sbk_x")
    assert (
        code == 2
        and err.startswith("sbaudit: error: cannot reach http://127.0.0.1:1: ")
        and err.count("\n") == 1
    )


def test_audits_run_wait_shows_progress_then_the_verdict_and_the_report_url(server, capsys):
    server.routes.update({
        ("POST", "/v1/audits"): httpx.Response(202, json={**AUDIT, "status": "queued", "results": None}),
        ("GET", "/v1/jobs/job_1/events"): sse(("job", JOB), ("job", RUNNING),
                                              ("job", {**RUNNING, "state": "succeeded", "progress": 1.0}),
                                              ("end", {"state": "succeeded"})),
        ("GET", "/v1/audits/aud_1"): httpx.Response(200, json=AUDIT),
    })  # fmt: skip
    code, out, err = run(
        capsys, "audits", "run", "--model-id", "mdl_1", "--checks", "randomization,pgd", "--wait"
    )
    assert code == 0
    assert server.json_sent("POST", "/v1/audits") == {"model_id": "mdl_1", "checks": ["randomization", "pgd"]}
    assert "job_1  queued  0%" in err
    assert "job_1  running  randomization  40%  2/5  auc 0.970  ETA 12s" in err
    assert err.rstrip().endswith("job job_1 succeeded")
    assert "Verdict: relies exclusively on S (linear) — simplicity bias" in out
    assert out.rstrip().endswith("report: http://sb.test/v1/audits/aud_1/report")


def test_audits_show_tables_the_key_numbers_of_every_check(server, capsys):
    server.routes[("GET", "/v1/audits/aud_1")] = httpx.Response(200, json=AUDIT)
    code, out, _ = run(capsys, "audits", "show", "aud_1")
    assert code == 0
    lines = out.splitlines()
    auc = next(line for line in lines if line.startswith("│ AUC"))
    assert "1.000" in auc and "0.530 ± 0.022" in auc and "1.000 ± 0.000" in auc
    # The five groups with the lowest AUC after randomization, lowest first.
    dependence = [line for line in lines if line.startswith(("│ block", "│ coordinate"))]
    assert [row.split("│")[1].strip() for row in dependence] == [
        "block 0: linear", "coordinate 7", "coordinate 6", "coordinate 5", "coordinate 4"]  # fmt: skip
    assert any("share of the perturbation on linear" in line and "0.987 ± 0.004" in line for line in lines)
    assert any("fooling rate" in line and "0.972" in line for line in lines)
    assert "accuracy 0.996 reaches what S^c alone allows" in out and "Ensemble of 2 (logits)" in out
    code, out, _ = run(capsys, "audits", "show", "aud_1", "--json")
    assert json.loads(out) == AUDIT


def test_jobs_watch_exits_1_for_a_failed_job(server, capsys):
    failed = {**RUNNING, "state": "failed", "error": "RuntimeError: out of memory"}
    server.routes[("GET", "/v1/jobs/job_1/events")] = sse(("job", failed), ("end", {"state": "failed"}))
    code, _, err = run(capsys, "jobs", "watch", "job_1")
    assert code == 1 and err.strip() == "job job_1 failed: RuntimeError: out of memory"


def test_watching_a_waiting_job_names_what_it_waits_for_then_follows_it(server, capsys):
    waiting = {**JOB, "state": "waiting", "waiting_for": ["mdl_1", "ds_1"]}
    server.routes[("GET", "/v1/jobs/job_1/events")] = sse(
        ("job", waiting), ("job", {**waiting, "waiting_for": ["mdl_1"]}), ("job", {**JOB, "waiting_for": []}),
        ("job", RUNNING), ("job", {**RUNNING, "state": "succeeded", "progress": 1.0}),
        ("end", {"state": "succeeded"}),
    )  # fmt: skip
    code, _, err = run(capsys, "jobs", "watch", "job_1")
    assert code == 0
    lines = err.splitlines()
    assert lines[:3] == [
        "job_1  waiting  waiting for mdl_1, ds_1  0%",
        "job_1  waiting  waiting for mdl_1  0%",
        "job_1  queued  0%",
    ]


def test_jobs_cancel_cascades_only_when_asked(server, capsys):
    server.routes[("POST", "/v1/jobs/job_1/cancel")] = httpx.Response(202, json={**JOB, "state": "canceled"})
    assert run(capsys, "jobs", "cancel", "job_1")[0] == 0
    assert run(capsys, "jobs", "cancel", "job_1", "--cascade")[0] == 0
    sent = [dict(r.url.params) for r in server.requests if r.url.path == "/v1/jobs/job_1/cancel"]
    assert sent == [{}, {"cascade": "true"}]


def test_a_job_shows_what_it_waits_for(server, capsys):
    waiting = {**JOB, "state": "waiting", "waiting_for": ["ds_1"]}
    server.routes[("GET", "/v1/jobs/job_1")] = httpx.Response(200, json=waiting)
    code, out, _ = run(capsys, "jobs", "show", "job_1")
    assert code == 0 and any(line.split() == ["waiting", "for", "ds_1"] for line in out.splitlines())


def test_lists_stop_at_the_limit(server, capsys):
    pages = [httpx.Response(200, json={"data": [{**JOB, "id": f"job_{i}"} for i in range(3)],
                                       "next_cursor": "c"}),
             httpx.Response(200, json={"data": [{**JOB, "id": "job_9"}], "next_cursor": None})]  # fmt: skip
    server.routes[("GET", "/v1/jobs")] = pages
    code, out, _ = run(capsys, "jobs", "list", "--limit", "4", "--state", "queued", "--json")
    assert code == 0 and [j["id"] for j in json.loads(out)] == ["job_0", "job_1", "job_2", "job_9"]
    assert server.requests[0].url.params["state"] == "queued"


def test_artifacts_get_and_audits_report_write_files(server, capsys, tmp_path):
    server.routes[("GET", "/v1/artifacts/art_1")] = httpx.Response(
        200, content=b"weights", headers={"content-disposition": 'attachment; filename="m.safetensors"'}
    )
    server.routes[("GET", "/v1/audits/aud_1/report")] = httpx.Response(200, text="<html>report</html>")
    code, out, _ = run(capsys, "artifacts", "get", "art_1", "-o", str(tmp_path))
    assert code == 0 and out.strip() == str(tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == b"weights"
    code, out, _ = run(capsys, "audits", "report", "aud_1", "-o", str(tmp_path / "r.html"))
    assert code == 0 and out.split() == [str(tmp_path / "r.html"), "http://sb.test/v1/audits/aud_1/report"]
    assert (tmp_path / "r.html").read_text() == "<html>report</html>"
    code, _, err = run(capsys, "artifacts", "get", "art_1", "-o", str(tmp_path / "missing" / "x"))
    assert code == 2 and err.startswith("sbaudit: error: ") and err.count("\n") == 1


def test_on_a_terminal_the_progress_bar_shows_stage_steps_metrics_and_eta(server):
    from rich.console import Console

    from sbclient.cli.watch import watch_job

    server.routes[("GET", "/v1/jobs/job_1/events")] = [sse(("job", JOB), ("job", RUNNING)), sse()]
    server.routes[("GET", "/v1/jobs/job_1")] = httpx.Response(200, json={**RUNNING, "state": "canceled"})
    screen = io.StringIO()
    with cli_connect.open_client(None) as client:
        job = watch_job(client, "job_1", Console(file=screen, force_terminal=True, width=120))
    # After its events the stream closed, then twice in a row gave none: the client long-polled instead.
    assert job["state"] == "canceled"
    text = screen.getvalue()
    assert "randomization" in text and "2/5" in text and "auc 0.970" in text and "ETA 12s" in text
    assert "job job_1 canceled" in text
