"""Gates (``--fail-on``, ``--fail-if``): the expression parser, how a finished audit is judged, and the exit
statuses of ``audits run --wait`` and ``audits show`` against a fake server (httpx.MockTransport): 0 passed,
1 the job failed, 2 a usage error (before any request where it can be), 3 a gate tripped."""

from __future__ import annotations

import json

import httpx
import pytest

from sbclient import Client
from sbclient.cli import connect as cli_connect
from sbclient.cli.entry import main
from sbclient.cli.errors import CliError
from sbclient.cli.gates import GATE_TRIPPED, Condition, Gates, parse_condition, parse_fail_on

NOW = "2026-01-01T00:00:00Z"
RESULTS = {
    "randomization": {"auc": 1.0, "accuracy": 0.99, "s_randomized_auc": {"mean": 0.503, "std": 0.01},
                      "sc_randomized_auc": {"mean": 1.0, "std": 0.0}},
    "feature_dependence": {"random": [{"group": "block 0: linear", "auc": 0.51}]},
    "pgd": {"simple_share": 0.9, "accuracy": None, "config": {"norm": "l2"}},
}  # fmt: skip
AUDIT = {"id": "aud_1", "name": None, "status": "ready", "job_id": "job_1", "error": None, "artifacts": [],
         "created_at": NOW, "updated_at": NOW, "model_id": "mdl_1", "model_ids": None, "ensemble_size": 1,
         "combine": None, "dataset_id": "ds_1", "checks": list(RESULTS), "options": {}, "simple_blocks": [0],
         "split": "test", "repeats": 2, "seed": 0, "verdict_code": "exclusively_s",
         "verdict_thresholds": None, "verdict": "relies exclusively on S (linear)",
         "results": RESULTS}  # fmt: skip


# --- the parser -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "op", "number"),
    [
        ("s_randomized_auc < 0.6", ("randomization", "s_randomized_auc"), "<", 0.6),
        ("auc>=0.9", ("randomization", "auc"), ">=", 0.9),
        ("  sc_randomized_logit_shift != 1e-3 ", ("randomization", "sc_randomized_logit_shift"), "!=", 0.001),
        ("pgd.simple_share > .5", ("pgd", "simple_share"), ">", 0.5),
        (
            "randomization.s_randomized_auc.mean <= 0.55",
            ("randomization", "s_randomized_auc", "mean"),
            "<=",
            0.55,
        ),
        ("feature_dependence.random.0.auc == -1", ("feature_dependence", "random", "0", "auc"), "==", -1.0),
    ],
)
def test_conditions_parse(text, path, op, number):
    condition = parse_condition(text)
    assert (condition.path, condition.op, condition.number, condition.text) == (path, op, number, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s_randomized_auc", "expected FIELD OP NUMBER"),
        ("s_randomized_auc =< 0.6", "expected FIELD OP NUMBER"),
        ("< 0.6", "expected FIELD OP NUMBER"),
        ("s_randomized_auc < 0.6 or auc > 1", "expected FIELD OP NUMBER"),
        ("auc < 0.6 0.7", "expected FIELD OP NUMBER"),
        ("auc < high", "'high' is not a number"),
        ("auc < nan", "the number must be finite"),
        ("auc < inf", "the number must be finite"),
        ("sauc < 0.6", "unknown field 'sauc'"),
        ("pgd < 0.6", "unknown field 'pgd'"),
        ("verdict.code == 1", "unknown field 'verdict.code'"),
        ("pgd..simple_share < 1", "unknown field 'pgd..simple_share'"),
    ],
)
def test_bad_conditions_are_one_line_errors(text, message):
    with pytest.raises(CliError, match="^--fail-if ") as caught:
        parse_condition(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_fail_on_takes_codes_comma_separated_and_repeated():
    assert parse_fail_on(["exclusively_s,mostly_s", " both "]) == {"exclusively_s", "mostly_s", "both"}
    assert parse_fail_on([]) == frozenset()
    with pytest.raises(
        CliError, match="unknown verdict code 'simplicity_biased' \\(choose from: exclusively_s"
    ):
        parse_fail_on(["exclusively_s,simplicity_biased"])
    with pytest.raises(CliError, match="--fail-on: name at least one verdict code"):
        parse_fail_on([" , "])


# --- judging an audit -----------------------------------------------------------------------------------


def gates(*conditions: str, fail_on: tuple[str, ...] = ()) -> Gates:
    return Gates(frozenset(fail_on), tuple(parse_condition(c) for c in conditions))


def test_a_tripped_gate_says_which_and_the_value(capsys):
    assert gates("s_randomized_auc < 0.6", "auc < 0.9", fail_on=("mostly_s",)).judge(AUDIT) == GATE_TRIPPED
    assert capsys.readouterr().err.splitlines() == [
        "gate passed: --fail-on mostly_s (verdict_code exclusively_s)",
        "gate tripped: --fail-if 's_randomized_auc < 0.6' (s_randomized_auc = 0.503)",
        "gate passed: --fail-if 'auc < 0.9' (auc = 1)",
    ]
    assert gates(fail_on=("exclusively_s", "mostly_s")).judge(AUDIT) == GATE_TRIPPED
    assert (
        "gate tripped: --fail-on exclusively_s,mostly_s (verdict_code exclusively_s)"
        in capsys.readouterr().err
    )


def test_gates_that_hold_pass():
    passing = gates("sc_randomized_auc < 0.99", "randomization.s_randomized_auc.std > 0.01",
                    "feature_dependence.random.0.auc != 0.51", "pgd.simple_share > 0.95",
                    fail_on=("both",))  # fmt: skip
    assert passing.judge(AUDIT) == 0


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("uap.accuracy < 0.5", "this audit has no uap results (the check did not run)"),
        ("pgd.clean_accuracy < 0.5", "results.pgd has no 'clean_accuracy'"),
        ("feature_dependence.random.3.auc < 0.5", "results.feature_dependence.random has no '3'"),
        ("pgd.accuracy < 0.5", "results.pgd.accuracy has no value in this audit (null)"),
        ("pgd.config.norm < 0.5", "results.pgd.config.norm is not a number"),
    ],
)
def test_a_field_this_audit_lacks_is_a_clear_error(condition, message):
    with pytest.raises(CliError, match=f"^--fail-if '{condition}': ") as caught:
        gates(condition).judge(AUDIT)
    assert message in str(caught.value)


def test_require_checks_refuses_a_condition_on_a_check_not_requested():
    gates("auc < 0.6", "pgd.simple_share > 0.5").require_checks(["randomization", "pgd"])
    with pytest.raises(CliError, match="reads the pgd check's results, which this audit does not run"):
        gates("pgd.simple_share > 0.5").require_checks(["randomization"])
    assert isinstance(parse_condition("auc < 1"), Condition) and not Gates(frozenset(), ())


# --- through the CLI --------------------------------------------------------------------------------------


class FakeServer:
    def __init__(self, routes: dict[tuple[str, str], httpx.Response]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes.get((request.method, request.url.path), httpx.Response(404, json={"detail": "no"}))


def events(state: str) -> httpx.Response:
    job = {"id": "job_1", "kind": "run_audit", "state": state, "progress": 1.0, "stage": None, "detail": None,
           "attempt": 1, "max_attempts": 3, "error": None, "resource_type": "audit", "resource_id": "aud_1",
           "created_at": NOW, "started_at": NOW, "finished_at": NOW, "updated_at": NOW,
           "eta_seconds": None}  # fmt: skip
    text = f"event: job\ndata: {json.dumps(job)}\n\nevent: end\ndata: {json.dumps({'state': state})}\n\n"
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


@pytest.fixture
def server(monkeypatch, clean_env):
    fake = FakeServer({
        ("POST", "/v1/audits"): httpx.Response(202, json={**AUDIT, "status": "queued", "results": None}),
        ("GET", "/v1/jobs/job_1/events"): events("succeeded"),
        ("GET", "/v1/audits/aud_1"): httpx.Response(200, json=AUDIT),
    })  # fmt: skip
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


def test_audits_run_wait_exits_3_when_a_gate_trips_and_keeps_json_on_stdout(server, capsys):
    code, out, err = run(capsys, "audits", "run", "--model-id", "mdl_1", "--wait", "--json",
                         "--fail-on", "exclusively_s,mostly_s", "--fail-if", "s_randomized_auc < 0.6",
                         "--verdict-thresholds", '{"chance_margin": 0.05}')  # fmt: skip
    assert code == 3
    assert json.loads(out) == AUDIT
    assert "gate tripped: --fail-on exclusively_s,mostly_s (verdict_code exclusively_s)" in err
    sent = json.loads(server.requests[0].content)
    assert sent == {"model_id": "mdl_1", "verdict_thresholds": {"chance_margin": 0.05}}


def test_audits_run_wait_exits_0_when_every_gate_passes(server, capsys):
    code, out, err = run(capsys, "audits", "run", "--model-id", "mdl_1", "--wait", "--fail-on", "both",
                         "--fail-if", "auc < 0.9")  # fmt: skip
    assert code == 0 and "Verdict: " in out
    assert "gate passed: --fail-on both" in err and "gate passed: --fail-if 'auc < 0.9'" in err


def test_a_failed_job_exits_1_without_judging(server, capsys):
    server.routes[("GET", "/v1/jobs/job_1/events")] = events("failed")
    server.routes[("GET", "/v1/audits/aud_1")] = httpx.Response(
        200, json={**AUDIT, "status": "failed", "results": None, "verdict_code": None}
    )
    code, _, err = run(capsys, "audits", "run", "--model-id", "mdl_1", "--wait", "--fail-on", "exclusively_s")
    assert code == 1 and "gate" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--wait", "--fail-if", "auc << 0.6"],
            "sbaudit: error: --fail-if 'auc << 0.6': expected FIELD OP NUMBER",
        ),
        (["--wait", "--fail-on", "biased"], "sbaudit: error: --fail-on: unknown verdict code 'biased'"),
        (["--fail-on", "exclusively_s"], "sbaudit: error: --fail-on / --fail-if need --wait"),
        (
            ["--wait", "--checks", "randomization", "--fail-if", "pgd.simple_share > 0.5"],
            "sbaudit: error: --fail-if 'pgd.simple_share > 0.5': reads the pgd check's results",
        ),
    ],
)
def test_usage_errors_exit_2_before_any_request(server, capsys, argv, message):
    code, out, err = run(capsys, "audits", "run", "--model-id", "mdl_1", *argv)
    assert (code, out) == (2, "") and err.startswith(message) and err.count("\n") == 1
    assert server.requests == []


def test_audits_show_gates_an_existing_audit(server, capsys):
    code, out, err = run(capsys, "audits", "show", "aud_1", "--fail-if", "sc_randomized_auc < 0.9")
    assert code == 0 and "gate passed" in err and "Verdict: " in out
    code, _, err = run(capsys, "audits", "show", "aud_1", "--fail-on", "exclusively_s", "--json")
    assert code == 3 and "gate tripped: --fail-on exclusively_s" in err
    code, _, err = run(capsys, "audits", "show", "aud_1", "--fail-if", "uap.fooling_rate > 0.5")
    assert code == 2 and "this audit has no uap results (the check did not run)" in err
    code, _, _ = run(capsys, "audits", "show", "aud_1")
    assert code == 0


def test_audits_show_refuses_to_gate_an_unfinished_audit(server, capsys):
    server.routes[("GET", "/v1/audits/aud_1")] = httpx.Response(
        200, json={**AUDIT, "status": "running", "results": None, "verdict_code": None}
    )
    code, _, err = run(capsys, "audits", "show", "aud_1", "--fail-on", "exclusively_s")
    assert code == 2 and "audit aud_1 is running: gates need a finished audit" in err
    server.routes[("GET", "/v1/audits/aud_1")] = httpx.Response(
        200, json={**AUDIT, "status": "failed", "results": None, "verdict_code": None}
    )
    code, _, err = run(capsys, "audits", "show", "aud_1", "--fail-on", "exclusively_s")
    assert code == 1 and "gates not judged: audit aud_1 is failed" in err
