"""Gates through the real CLI against a real `sbaudit serve`: a gate trips with exit status 3 on a
simplicity-biased model and passes on one trained with S randomized; custom verdict thresholds change the
verdict and are echoed; and the CI example (docs/ci/github-actions-audit.yml) runs as written.

The simplicity-biased model is the paper's: a (100,2)-FCN on LMS-5, S = block 0 (the linear coordinate).
The one trained with S randomized learns on data whose block 0 is noise (a ``noise`` block in place of the
linear one), so it can only use S^c. Its S^c is 49 3-slabs rather than LMS-5's 5-slabs: an FCN needs tens
of thousands of examples to learn 5-slabs alone, 3-slabs take a few hundred updates on 1000, and all this
test needs is a predictive model that does not rely on S.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sbclient import Client
from sbclient.cli.entry import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "docs" / "ci" / "github-actions-audit.yml"
SIZES = {"n_train": 1000, "n_val": 200, "n_test": 500, "seed": 0}
S_RANDOMIZED = {"blocks": [{"type": "noise"}, {"type": "slab", "k": 3, "count": 49}], "simple_blocks": [0]}
FCN = {"name": "fcn", "width": 100, "depth": 2}
TRAINING = {
    "lr": 0.1,
    "batch_size": 100,
    "eval_every": 100,
    "stop": {"train_accuracy": 0.999, "max_updates": 2000},
}
GATES = ("--fail-on", "exclusively_s,mostly_s", "--fail-if", "s_randomized_auc < 0.6")


@pytest.fixture
def cli_env(embedded, monkeypatch):
    monkeypatch.setenv("SBAUDIT_URL", embedded.base_url)
    monkeypatch.setenv("SBAUDIT_API_KEY", embedded.key)


@pytest.fixture(scope="module")
def models(embedded) -> dict[str, str]:
    """{"biased": LMS-5 FCN, "s_randomized": the FCN trained with S randomized}: ready model ids."""
    ids = {}
    with Client(url=embedded.base_url, api_key=embedded.key) as client:
        for name, dataset_body in (("biased", {"preset": "LMS-5"}), ("s_randomized", S_RANDOMIZED)):
            dataset = client.create_dataset({**dataset_body, **SIZES})
            assert client.wait(dataset["job_id"])["state"] == "succeeded"
            model = client.train_model(
                {"dataset_id": dataset["id"], "architecture": FCN, "training": TRAINING}
            )
            assert client.wait(model["job_id"])["state"] == "succeeded"
            ids[name] = model["id"]
    return ids


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_gate_trips_on_a_simplicity_biased_model_and_passes_on_one_trained_with_s_randomized(
    models, cli_env, capsys
):
    code, out, err = run(capsys, "audits", "run", "--model-id", models["biased"], "--simple-blocks", "0",
                         "--repeats", "2", "--wait", "--json", *GATES)  # fmt: skip
    biased = json.loads(out)  # --json output is the audit, unchanged by the gates
    assert code == 3, err
    assert biased["status"] == "ready" and biased["verdict_code"] == "exclusively_s"
    assert "gate tripped: --fail-on exclusively_s,mostly_s (verdict_code exclusively_s)" in err
    s_auc = biased["results"]["randomization"]["s_randomized_auc"]["mean"]
    assert f"gate tripped: --fail-if 's_randomized_auc < 0.6' (s_randomized_auc = {s_auc:.6g})" in err

    code, out, err = run(capsys, "audits", "run", "--model-id", models["s_randomized"],
                         "--simple-blocks", "0", "--repeats", "2", "--wait", *GATES)  # fmt: skip
    assert code == 0, err
    audit_id = re.search(r"^audit (aud_\S+) \(ready\)", out, re.MULTILINE).group(1)
    assert "gate passed: --fail-on exclusively_s,mostly_s" in err and "gate passed: --fail-if" in err
    with Client() as client:
        unbiased = client.get_audit(audit_id)
    assert unbiased["verdict_code"] == "exclusively_sc"  # predictive, on S^c alone
    assert unbiased["results"]["randomization"]["s_randomized_auc"]["mean"] > 0.95

    # A pipeline can gate an audit that already ran.
    assert run(capsys, "audits", "show", biased["id"], "--fail-on", "exclusively_s")[0] == 3
    assert run(capsys, "audits", "show", audit_id, "--fail-on", "exclusively_s", "--json")[0] == 0
    code, _, err = run(capsys, "audits", "show", audit_id, "--fail-if", "pgd.simple_share > 0.5")
    assert code == 2 and "this audit has no pgd results (the check did not run)" in err


def test_custom_thresholds_change_the_verdict_and_are_echoed(models, cli_env, capsys, tmp_path):
    # The biased model's S-randomized AUC is near chance but not exactly 0.5: with no margin around chance
    # it no longer counts as "exclusively" S, only "mostly".
    code, out, err = run(capsys, "audits", "run", "--model-id", models["biased"], "--repeats", "2", "--wait",
                         "--json", "--verdict-thresholds", '{"chance_margin": 0}',
                         "--fail-on", "exclusively_s")  # fmt: skip
    audit = json.loads(out)
    assert code == 0, err
    assert audit["verdict_code"] == "mostly_s"
    assert audit["verdict_thresholds"] == {"min_predictive": 0.6, "chance_margin": 0.0,
                                           "unchanged_margin": 0.02, "mostly_ratio": 2.0}  # fmt: skip
    with Client() as client:
        read = client.get_audit(audit["id"])
        (results,) = [a for a in read["artifacts"] if a["kind"] == "results"]
        stored = json.loads(client.download_artifact(results["id"], tmp_path).read_text())  # results.json
    assert read["verdict_thresholds"] == audit["verdict_thresholds"]
    assert stored["verdict_code"] == "mostly_s" and stored["verdict_thresholds"]["chance_margin"] == 0.0
    assert run(capsys, "audits", "show", audit["id"], "--fail-on", "mostly_s")[0] == 3


# --- the CI example ---------------------------------------------------------------------------------------


def _substitute_secrets(value: str, secrets: dict[str, str]) -> str:
    out = re.sub(r"\$\{\{\s*secrets\.(\w+)\s*\}\}", lambda m: secrets[m.group(1)], value)
    assert "${{" not in out, f"an expression this test cannot evaluate: {value!r}"
    return out


def _github_env(path: Path) -> dict[str, str]:
    """What the steps appended to $GITHUB_ENV (NAME=value lines), as the runner reads it between steps."""
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines if line.strip())


def test_the_ci_example_runs_as_written(embedded, tmp_path):
    """Every `run:` step of the workflow that calls sbaudit runs, in order, with bash as GitHub runs it
    (`shell: bash`), the job's env with the two secrets filled in, and $GITHUB_ENV carried between steps; a
    step after a failure runs only if its `if:` says always(), as on GitHub."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["defaults"]["run"]["shell"] == "bash"
    (job,) = workflow["jobs"].values()
    secrets = {"SBAUDIT_URL": embedded.base_url, "SBAUDIT_API_KEY": embedded.key}
    job_env = {name: _substitute_secrets(str(value), secrets) for name, value in job["env"].items()}
    assert set(job_env) == set(secrets)
    run_steps = [step for step in job["steps"] if "run" in step]
    assert [s["run"].strip() for s in run_steps if "sbaudit" not in s["run"]] == ["pip install ."]

    github_env = tmp_path / "github_env"
    bin_dir = str(Path(sys.executable).parent)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SBAUDIT_")}
    base.update(job_env, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO),
                GITHUB_ENV=str(github_env))  # fmt: skip
    outcomes: dict[str, subprocess.CompletedProcess[str]] = {}
    failed = False
    for step in (s for s in run_steps if "sbaudit" in s["run"]):
        if failed and "always()" not in str(step.get("if", "")):
            continue
        script = _substitute_secrets(step["run"], secrets)
        env = {**base, **_github_env(github_env)}
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        outcomes[step["name"]] = done
        failed = failed or done.returncode != 0

    codes = {name: done.returncode for name, done in outcomes.items()}
    details = {name: done.stderr[-2000:] for name, done in outcomes.items()}
    assert codes == {
        "Generate the evaluation data": 0,
        "Train the model": 0,
        # the LMS-5 FCN is simplicity-biased
        "Audit for simplicity bias (exit status 3 when a gate trips)": 3,
        "Save the report": 0,
    }, details
    ids = _github_env(github_env)
    assert ids["DATASET_ID"].startswith("ds_") and ids["MODEL_ID"].startswith("mdl_")
    audit: dict[str, Any] = json.loads((tmp_path / "audit.json").read_text())
    assert audit["model_id"] == ids["MODEL_ID"] and audit["verdict_code"] == "exclusively_s"
    assert (
        "gate tripped: --fail-on exclusively_s,mostly_s"
        in outcomes["Audit for simplicity bias (exit status 3 when a gate trips)"].stderr
    )
    assert audit["id"] in (tmp_path / "report.html").read_text()
