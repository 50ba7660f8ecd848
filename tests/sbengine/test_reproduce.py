"""The paper's experiments at toy size: the same code paths as full size, on tiny data."""

import numpy as np
import pytest

from sbengine.reproduce import EXPERIMENTS, run_experiment
from tests.sbengine.image_files import labels_from_counts, write_cifar10, write_mnist


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    write_mnist(root, train=True, labels=labels_from_counts({0: 20, 1: 20, 4: 5}, seed=0))
    write_mnist(root, train=False, labels=labels_from_counts({0: 8, 1: 8}, seed=1))
    write_cifar10(
        root,
        train_labels=labels_from_counts({1: 20, 9: 20, 3: 5}, seed=2),
        test_labels=labels_from_counts({1: 8, 9: 8}, seed=3),
    )
    return root


def test_every_experiment_has_a_paper_column():
    for name, exp in EXPERIMENTS.items():
        assert exp.paper, name
        assert exp.kind in ("single", "ensemble", "uap"), name


def test_mnist_cifar_runs_on_tiny_files_in_the_real_formats(raw_dir):
    out = run_experiment(
        "mnist-cifar", n_train=24, epochs=1, repeats=1, raw_data_dir=str(raw_dir), device="cpu"
    )
    assert out["n_train"] == 24 and out["epochs"] == 1
    assert out["config"]["dataset"]["preset"] == "MNIST-CIFAR"
    for key in ("test_accuracy", "auc", "s_randomized_auc", "sc_randomized_auc"):
        assert np.isfinite(out[key]), key


def test_lms5_small_reproduces_the_finding():
    out = run_experiment("lms5", n_train=5000, eval_every=500, device="cpu")
    assert out["test_accuracy"] >= 0.99
    assert 0.4 <= out["s_randomized_auc"] <= 0.6 and out["sc_randomized_auc"] >= 0.99


def test_unknown_experiment():
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("lms9")


def test_mnist_cifar_adversarial_runs_on_tiny_files(raw_dir):
    out = run_experiment(
        "mnist-cifar-adversarial", n_train=24, epochs=1, repeats=1, raw_data_dir=str(raw_dir), device="cpu"
    )
    assert 0.0 <= out["robust_test_accuracy"] <= 1.0
    assert "robust_accuracy" in out["history"][-1]
    assert out["config"]["training"]["adversarial"]["attack"]["eps"] == 0.3


def test_uap_lms5_small():
    out = run_experiment("uap-lms5", n_train=5000, device="cpu")
    assert out["test_accuracy"] >= 0.99
    assert out["pgd_accuracy"] <= 0.05 and out["pgd_simple_share"] >= 0.95
    assert out["uap_accuracy"] <= 0.1 and out["uap_simple_share"] >= 0.95
    assert out["uap_norm"] == pytest.approx(1.0, abs=1e-4)
    assert (out["uap_fit_split"], out["uap_eval_split"]) == ("val", "test")


def test_ensemble_lms5_small():
    out = run_experiment("ensemble-lms5", n_train=4000, eval_every=500, repeats=2, device="cpu")
    assert out["size"] == 3 and len(out["member_test_accuracies"]) == 3
    assert out["test_accuracy"] >= 0.99
    assert 0.4 <= out["s_randomized_auc"] <= 0.6 and out["sc_randomized_auc"] >= 0.99


def test_mnist_cifar_ensemble_runs_on_tiny_files(raw_dir):
    out = run_experiment(
        "mnist-cifar-ensemble", n_train=24, epochs=1, repeats=1, raw_data_dir=str(raw_dir), device="cpu"
    )
    assert out["size"] == 3 and np.isfinite(out["s_randomized_auc"])


def test_cli_names_match_the_experiments():
    from sbengine.cli import EXPERIMENT_NAMES

    assert set(EXPERIMENT_NAMES) == set(EXPERIMENTS)
