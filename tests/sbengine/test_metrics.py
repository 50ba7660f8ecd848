import numpy as np
import pytest
import torch

from sbengine.audit import run_audit
from sbengine.data import build_dataset
from sbengine.metrics import (
    Canonical,
    classify,
    feature_dependence,
    permute_columns,
    randomization,
    roc_auc,
    swap_columns,
    verdict,
)


class CoordinateModel(torch.nn.Module):
    """A hand-made classifier that looks only at given canonical coordinates (through the rotation)."""

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
    return build_dataset({"preset": "LMS-5", "n_train": 100, "n_val": 0, "n_test": 4000, "seed": 0})


def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(float)
    labels = rng.integers(0, 2, 300)
    pos, neg = scores[labels == 1], scores[labels == 0]
    expected = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        pos.size * neg.size
    )
    assert roc_auc(scores, labels) == pytest.approx(expected)
    assert roc_auc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert np.isnan(roc_auc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_randomization_keeps_each_blocks_marginal_and_moves_blocks_jointly(lms5):
    canon = Canonical(lms5, "cpu")
    x, y = lms5.split("test")
    z = canon.to_canonical(torch.from_numpy(x))
    cols = list(lms5.blocks[1].indices)
    z2 = permute_columns(z, cols, torch.Generator().manual_seed(0))
    for c in (0, 7, 30):  # every column keeps its multiset of values (its marginal)
        assert torch.equal(torch.sort(z[:, c]).values, torch.sort(z2[:, c]).values)
    assert torch.equal(z2[:, 0], z[:, 0])  # S untouched
    # the block moved jointly: each new row equals some old row on all of the block's coordinates
    old_rows = {tuple(r) for r in z[:, cols].numpy().round(5)}
    assert all(tuple(r) in old_rows for r in z2[:, cols].numpy().round(5)[:200])
    assert not torch.equal(z2[:, cols], z[:, cols])
    # and mapping back through the rotation is exact
    torch.testing.assert_close(canon.from_canonical(z), torch.from_numpy(x), atol=1e-5, rtol=0)


def test_swap_takes_values_from_the_other_class(lms5):
    canon = Canonical(lms5, "cpu")
    x, y = lms5.split("test")
    z = canon.to_canonical(torch.from_numpy(x))
    yt = torch.from_numpy(y)
    z2 = swap_columns(z, [0], yt, torch.Generator().manual_seed(0))
    # the linear coordinate's sign is the label: after the swap it shows the other class everywhere
    assert ((z2[:, 0] > 0) == (yt == 0)).all()


def test_model_using_only_s_is_exclusively_s(lms5):
    model = CoordinateModel(lms5.rotation, [0], 50)
    r = randomization(model, lms5, simple_blocks=[0], repeats=4, seed=0)
    assert r["auc"] == 1.0
    assert 0.45 <= r["s_randomized_auc"]["mean"] <= 0.55
    assert r["sc_randomized_auc"]["mean"] == 1.0
    assert len(r["s_randomized_auc"]["values"]) == 4 and r["s_randomized_auc"]["std"] > 0
    assert r["sc_randomized_logit_shift"]["mean"] < 1e-4 < r["s_randomized_logit_shift"]["mean"]
    hist = r["histograms"]
    assert len(hist["bin_edges"]) == 21 and len(hist["standard"]) == 20
    v = verdict(r, lms5)
    assert v["code"] == "exclusively_s" and v["text"].startswith("relies exclusively on S (linear)")


def test_model_using_only_slabs_is_exclusively_sc():
    ds = build_dataset({"preset": "MS-(5,7)", "n_train": 100, "n_val": 0, "n_test": 3000, "rotate": False})

    class SlabModel(torch.nn.Module):  # reads the 5-slab coordinate of S^c-like block: uses coordinate 1 only
        def forward(self, x):
            mag = x[:, 1].abs()
            pos = ((mag >= 0.257) & (mag <= 0.372)) | (mag >= 0.885)
            s = pos.float() * 2 - 1
            return torch.stack([-s, s], 1)

    r = randomization(SlabModel(), ds, simple_blocks=[0], repeats=2)
    assert r["auc"] == 1.0 and r["s_randomized_auc"]["mean"] == 1.0
    assert abs(r["sc_randomized_auc"]["mean"] - 0.5) < 0.05
    assert verdict(r, ds)["code"] == "exclusively_sc"


def test_randomization_is_deterministic_by_seed(lms5):
    model = CoordinateModel(lms5.rotation, [0, 3], 50)
    a = randomization(model, lms5, repeats=2, seed=7)
    b = randomization(model, lms5, repeats=2, seed=7)
    c = randomization(model, lms5, repeats=2, seed=8)
    assert a == b
    assert a["s_randomized_auc"] != c["s_randomized_auc"]


def test_feature_dependence_per_block_and_coordinate(lms5):
    model = CoordinateModel(lms5.rotation, [0], 50)
    rows = {r["group"]: r for r in feature_dependence(model, lms5, method="random", seed=0)}
    assert len(rows) == 2 + 50
    assert abs(rows["coordinate 0"]["accuracy"] - 0.5) < 0.05
    assert rows["coordinate 5"]["accuracy"] == 1.0
    assert rows["block 1: 49x 5-slab"]["accuracy"] == 1.0
    swapped = {
        r["group"]: r
        for r in feature_dependence(
            model, lms5, method="swap", seed=0, groups={"S": [0], "Sc": list(range(1, 50))}
        )
    }
    assert swapped["S"]["accuracy"] == 0.0 and swapped["Sc"]["accuracy"] == 1.0
    sample = feature_dependence(model, lms5, groups={"S": [0]}, sample_fraction=0.25)
    assert sample[0]["coordinates"] == 1
    with pytest.raises(ValueError, match="method"):
        feature_dependence(model, lms5, method="zero")


@pytest.mark.parametrize(
    ("std", "s", "sc", "code"),
    [
        (1.0, 0.5, 1.0, "exclusively_s"),
        (1.0, 1.0, 0.52, "exclusively_sc"),
        (1.0, 0.7, 0.95, "mostly_s"),
        (1.0, 0.97, 0.8, "mostly_sc"),
        (1.0, 0.8, 0.8, "both"),
        (0.55, 0.5, 0.5, "not_predictive"),
    ],
)
def test_classify_thresholds(std, s, sc, code):
    assert classify(std, s, sc) == code


def test_run_audit_returns_verdict_and_requested_checks(lms5):
    model = CoordinateModel(lms5.rotation, [0], 50)
    out = run_audit(model, lms5, checks=["randomization", "feature_dependence"], repeats=2)
    assert out["verdict_code"] == "exclusively_s"
    assert set(out["results"]) == {"randomization", "feature_dependence"}
    assert set(out["results"]["feature_dependence"]) == {"random", "swap"}
    only_dep = run_audit(model, lms5, checks=["feature_dependence"], repeats=2)
    assert only_dep["verdict_code"] == "exclusively_s" and "randomization" not in only_dep["results"]
    with pytest.raises(ValueError, match="unknown audit check 'fgsm'"):
        run_audit(model, lms5, checks=["fgsm"])
