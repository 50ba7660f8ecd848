import json
import subprocess
import sys

import pytest

from sbclient.cli.entry import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sbclient.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_reproduce():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "reproduce" in out.stdout


def test_small_reproduce_lms5_json():
    out = run_cli(
        "reproduce", "lms5", "--json", "--n-train", "6000", "--eval-every", "500", "--device", "cpu"
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in (
        "name",
        "seed",
        "updates",
        "train_seconds",
        "test_accuracy",
        "auc",
        "s_randomized_auc",
        "sc_randomized_auc",
        "s_randomized_accuracy",
        "sc_randomized_accuracy",
    ):
        assert key in result
    assert result["name"] == "lms5" and result["seed"] == 0 and result["n_train"] == 6000
    assert result["test_accuracy"] >= 0.99
    assert 0.4 <= result["s_randomized_auc"] <= 0.6
    assert result["sc_randomized_auc"] >= 0.99
    assert result["verdict"].startswith("relies exclusively on S")


def test_table_output_shows_paper_column(capsys):
    assert main(["reproduce", "lms5", "--n-train", "3000", "--eval-every", "200", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "paper" in text and "S-randomized AUC" in text and "0.507" in text
    assert "seed 1" in text


@pytest.mark.parametrize("name", ["ensemble-lms5", "uap-lms5"])
def test_table_output_for_other_experiment_kinds(capsys, name):
    assert main(["reproduce", name, "--n-train", "3000", "--eval-every", "500", "--repeats", "2"]) == 0
    text = capsys.readouterr().out
    assert "paper" in text and "Verdict: relies exclusively on S" in text


@pytest.mark.parametrize(
    "args",
    [
        ["reproduce", "lms9"],
        ["reproduce", "lms5", "--n-train", "-5"],
        ["reproduce", "lms5", "--device", "tpu"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(args):
    out = run_cli(*args)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("sbaudit reproduce: error:")


def test_engine_errors_become_one_line_cli_errors():
    out = run_cli("reproduce", "lms5", "--n-train", "1")
    assert out.returncode == 2
    assert out.stderr.strip() == "sbaudit: error: n_train and n_test must be at least 2"
