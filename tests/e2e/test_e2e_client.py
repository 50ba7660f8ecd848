"""The command-line client against a real `sbaudit serve`: dataset -> model -> audit with --wait (progress
from the event stream), the verdict table and report URL, artifact download, report download, and
`jobs watch` on a finished job."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest

from sbclient import Client
from sbclient.cli.entry import main

FCN = {"name": "fcn", "width": 20, "depth": 1}
TRAINING = {"lr": 0.1, "batch_size": 100, "eval_every": 100, "stop": {"max_updates": 300}}


@pytest.fixture
def cli_env(embedded, monkeypatch):
    monkeypatch.setenv("SBAUDIT_URL", embedded.base_url)
    monkeypatch.setenv("SBAUDIT_API_KEY", embedded.key)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_runs_an_audit_from_dataset_to_report(embedded, cli_env, capsys, tmp_path):
    capsys.readouterr()
    code, out, err = run(capsys, "datasets", "create", "--preset", "LMS-5", "--n-train", "2000",
                         "--n-test", "500", "--n-val", "500", "--wait", "--json")  # fmt: skip
    assert code == 0, err
    dataset = json.loads(out)
    assert dataset["status"] == "ready" and dataset["sizes"] == {"train": 2000, "val": 500, "test": 500}
    assert err.rstrip().endswith(f"job {dataset['job_id']} succeeded")

    code, out, err = run(capsys, "models", "train", "--dataset-id", dataset["id"],
                         "--architecture", json.dumps(FCN), "--training", json.dumps(TRAINING),
                         "--wait", "--json")  # fmt: skip
    assert code == 0, err
    model = json.loads(out)
    assert model["status"] == "ready" and model["result"]["updates"] == 300

    code, out, err = run(capsys, "audits", "run", "--model-id", model["id"], "--checks",
                         "randomization,feature_dependence", "--simple-blocks", "0", "--repeats", "2",
                         "--wait")  # fmt: skip
    assert code == 0, err
    audit_id = re.search(r"^audit (aud_\S+) \(ready\)", out, re.MULTILINE).group(1)
    assert re.search(r"job_\S+  running  ", err), err  # progress lines from the event stream
    assert "Verdict: " in out and "S-randomized" in out and "Feature dependence (random)" in out
    report_url = f"{embedded.base_url}/v1/audits/{audit_id}/report"
    assert out.rstrip().endswith(f"report: {report_url}")

    with Client() as client:
        audit = client.get_audit(audit_id)
        assert audit["checks"] == ["randomization", "feature_dependence"] and audit["verdict"]
        assert client.audit_report_json(audit_id)

    weights = next(a for a in model["artifacts"] if a["kind"] == "weights")
    code, out, _ = run(capsys, "artifacts", "get", weights["id"], "-o", str(tmp_path))
    saved = tmp_path / weights["filename"]
    assert code == 0 and out.strip() == str(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == weights["sha256"]

    code, out, _ = run(capsys, "audits", "report", audit_id, "-o", str(tmp_path / "report.html"))
    assert code == 0 and out.split() == [str(tmp_path / "report.html"), report_url]
    assert audit_id in (tmp_path / "report.html").read_text()

    started = time.monotonic()
    code, _, err = run(capsys, "jobs", "watch", audit["job_id"])
    assert code == 0 and err.strip() == f"job {audit['job_id']} succeeded"
    assert time.monotonic() - started < 5


def test_refusals_are_one_line(embedded, cli_env, capsys):
    capsys.readouterr()
    code, out, err = run(capsys, "datasets", "create", "--preset", "LMS-5", "--n-train", "100000000")
    assert (code, out) == (2, "")
    assert err.startswith("sbaudit: error: 422 body.n_train: ") and err.count("\n") == 1
    code, _, err = run(capsys, "jobs", "watch", "job_AAAAAAAAAAAAAAAA")
    assert code == 2 and err == "sbaudit: error: 404 job 'job_AAAAAAAAAAAAAAAA' does not exist\n"
