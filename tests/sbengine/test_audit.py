"""Every audit check through run_audit, on a small trained model and ensemble."""

import pytest

from sbengine.audit import audit_figures, check_options, run_audit
from sbengine.data import build_dataset
from sbengine.ensemble import Ensemble, train_ensemble
from sbengine.train import TrainConfig

CONFIG = TrainConfig.from_dict(
    {"lr": 0.1, "eval_every": 200, "stop": {"train_accuracy": 1.0, "max_updates": 2000}}
)


@pytest.fixture(scope="module")
def setup():
    ds = build_dataset({"preset": "noisy-LMS-5", "n_train": 3000, "n_val": 500, "n_test": 1000, "seed": 0})
    members, _ = train_ensemble({"name": "fcn", "width": 32, "depth": 1}, ds, CONFIG, size=2, seed=0)
    return ds, members


def test_all_checks_on_a_single_model(setup):
    ds, members = setup
    out = run_audit(
        members[0],
        ds,
        checks=["randomization", "feature_dependence", "generalization", "pgd", "uap"],
        repeats=2,
        options={"uap": {"steps": 10, "epochs": 1}, "pgd": {"steps": 10}},
    )
    r = out["results"]
    assert out["verdict_code"] == "exclusively_s"
    assert r["generalization"]["bayes_accuracy_s"] == pytest.approx(0.95)
    assert r["generalization"]["bayes_accuracy_sc"] == 1.0
    assert r["generalization"]["suboptimal"] is True
    assert r["pgd"]["accuracy"] < 0.2 and r["pgd"]["simple_share"] > 0.9
    assert r["uap"]["fit_split"] == "val" and r["uap"]["eval_split"] == "test"
    assert r["uap"]["uap_norm"]["l2"] == pytest.approx(1.0, abs=1e-4)
    figures = audit_figures(out, ds)
    assert {
        "logit_histograms",
        "decision_boundary",
        "dependence_random",
        "pgd_heatmap",
        "pgd_block_share",
        "uap_block_share",
    } <= set(figures)
    assert all(png.startswith(b"\x89PNG") for png in figures.values())


def test_ensemble_check_reports_members(setup):
    ds, members = setup
    ensemble = Ensemble(members)
    out = run_audit(ensemble, ds, checks=["ensemble"], members=members, repeats=2)
    summary = out["results"]["ensemble"]
    assert summary["size"] == 2 and len(summary["members"]) == 2
    assert "ensemble_members" in audit_figures(out, ds)
    with pytest.raises(ValueError, match="needs an ensemble"):
        run_audit(members[0], ds, checks=["ensemble"])


@pytest.mark.parametrize(
    ("checks", "options", "message"),
    [
        (["pgd"], {"pgd": {"epsilon": 1}}, "unknown option 'epsilon'"),
        (["pgd"], {"uap": {}}, "not requested"),
        (["generalization"], {"generalization": {"x": 1}}, "allowed: none"),
    ],
)
def test_bad_options(checks, options, message):
    with pytest.raises(ValueError, match=message):
        check_options(checks, options)
