"""The verdict's thresholds are options: the defaults are the rules' historical numbers, a custom threshold
changes the category it should and nothing else, the audit echoes the thresholds it used, and the ensemble
check's member verdicts use the same ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbengine.audit import run_audit
from sbengine.data import build_dataset
from sbengine.ensemble import Ensemble
from sbengine.metrics import DEFAULT_THRESHOLDS, VerdictThresholds, classify


class CoordinateModel(torch.nn.Module):
    """Looks only at the given canonical coordinates (through the rotation)."""

    def __init__(self, q: np.ndarray | None, coords: list[int], d: int):
        super().__init__()
        w = torch.zeros(d, dtype=torch.float64)
        w[coords] = 1.0
        direction = torch.as_tensor(q, dtype=torch.float64).T @ w if q is not None else w
        self.register_buffer("direction", direction.float())

    def forward(self, x):
        s = x.flatten(1) @ self.direction
        return torch.stack([-s, s], dim=1) * 10


@pytest.fixture(scope="module")
def lms5():
    return build_dataset({"preset": "LMS-5", "n_train": 100, "n_val": 0, "n_test": 2000, "seed": 0})


def test_the_defaults_are_the_rules_numbers():
    assert DEFAULT_THRESHOLDS.to_dict() == {
        "min_predictive": 0.6, "chance_margin": 0.1, "unchanged_margin": 0.02, "mostly_ratio": 2.0,
    }  # fmt: skip
    assert VerdictThresholds.from_dict(None) == VerdictThresholds.from_dict({}) == DEFAULT_THRESHOLDS


@pytest.mark.parametrize(
    ("scores", "given", "default_code", "custom_code"),
    [
        ((0.65, 0.5, 0.65), {"min_predictive": 0.7}, "exclusively_s", "not_predictive"),
        ((1.0, 0.57, 1.0), {"chance_margin": 0.05}, "exclusively_s", "mostly_s"),
        ((1.0, 0.5, 0.97), {"unchanged_margin": 0.05}, "mostly_s", "exclusively_s"),
        ((1.0, 0.7, 0.9), {"mostly_ratio": 4}, "mostly_s", "both"),
        ((1.0, 0.9, 0.7), {"mostly_ratio": 4}, "mostly_sc", "both"),
    ],
)
def test_a_custom_threshold_changes_the_category(scores, given, default_code, custom_code):
    assert classify(*scores) == default_code
    assert classify(*scores, thresholds=VerdictThresholds.from_dict(given)) == custom_code


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"chance_band": 0.1}, "unknown threshold 'chance_band'"),
        ({"chance_margin": -0.1}, r"chance_margin must be a number in \[0.0, 1.0\]"),
        ({"mostly_ratio": 0.5}, r"mostly_ratio must be a number in \[1.0, 100.0\]"),
        ({"min_predictive": True}, "min_predictive must be a number"),
        ({"unchanged_margin": "0.02"}, "unchanged_margin must be a number"),
        ({"chance_margin": float("nan")}, "chance_margin must be a number"),
    ],
)
def test_bad_thresholds_are_refused(given, message):
    with pytest.raises(ValueError, match=message):
        VerdictThresholds.from_dict(given)


def test_the_audit_uses_and_echoes_its_thresholds(lms5):
    model = CoordinateModel(lms5.rotation, [0], 50)
    default = run_audit(model, lms5, checks=["randomization"], repeats=2)
    assert default["verdict_code"] == "exclusively_s"
    assert default["verdict_thresholds"] == DEFAULT_THRESHOLDS.to_dict()
    # S-randomized AUC is near 0.5 but not exactly: with no margin around chance it is no longer
    # "exclusively".
    strict = run_audit(
        model, lms5, checks=["randomization"], repeats=2, verdict_thresholds={"chance_margin": 0}
    )
    assert strict["results"] == default["results"]
    assert strict["verdict_code"] == "mostly_s"
    assert strict["verdict_thresholds"] == {**DEFAULT_THRESHOLDS.to_dict(), "chance_margin": 0.0}
    with pytest.raises(ValueError, match="unknown threshold 'margin'"):
        run_audit(model, lms5, checks=["randomization"], verdict_thresholds={"margin": 0.1})


def test_the_ensemble_checks_member_verdicts_use_the_audits_thresholds(lms5):
    members = [CoordinateModel(lms5.rotation, [0], 50), CoordinateModel(lms5.rotation, [0], 50)]
    ensemble = Ensemble(members, "logits", num_classes=2)
    kwargs = {"checks": ["ensemble"], "repeats": 2, "members": members}
    default = run_audit(ensemble, lms5, **kwargs)["results"]["ensemble"]
    assert default["member_verdicts"] == {"exclusively_s": 2}
    strict = run_audit(ensemble, lms5, verdict_thresholds={"chance_margin": 0}, **kwargs)["results"][
        "ensemble"
    ]
    assert strict["member_verdicts"] == {"mostly_s": 2} and strict["ensemble"]["verdict_code"] == "mostly_s"
