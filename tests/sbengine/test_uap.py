"""Universal adversarial perturbations (docs/method.md §8 with §12.4's fixes)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from test_attacks import CoordinateModel, LinearModel, TopHalfModel, small_lms5, tiny_images, trained_fcn

import sbengine.uap as uap_module
from sbengine.attacks import PGDConfig, data_bounds, relative_to_range
from sbengine.uap import apply_uap, sgd_uap, svd_uap, uap_audit


@pytest.fixture(scope="module")
def lms5():
    return small_lms5()


@pytest.fixture(scope="module")
def fcn(lms5):
    return trained_fcn(lms5)


def test_apply_uap_label_signed_and_agnostic():
    x = torch.zeros(4, 3)
    y = torch.tensor([0, 1, 1, 0])
    v = torch.tensor([0.5, -1.0, 2.0])
    signed = apply_uap(x, y, v, label_signed=True)
    torch.testing.assert_close(signed, torch.stack([-v, v, v, -v]))
    torch.testing.assert_close(apply_uap(x, y, v, label_signed=True, sign=-1.0), -signed)
    torch.testing.assert_close(apply_uap(x, y, v, label_signed=False), v.expand(4, 3))
    clipped = apply_uap(x, y, v, label_signed=False, bounds=(-0.8, 0.8))
    torch.testing.assert_close(clipped[0], torch.tensor([0.5, -0.8, 0.8]))
    with pytest.raises(ValueError, match="binary"):
        apply_uap(x, torch.tensor([0, 1, 2, 0]), v, label_signed=True)


def test_apply_uap_broadcasts_over_images():
    x = torch.rand(2, 3, 4, 4)
    v = torch.ones(3 * 4 * 4)
    out = apply_uap(x, torch.tensor([0, 1]), v, label_signed=True, bounds=(0.0, 1.0))
    assert out.shape == x.shape
    assert (out[0] == 0).all() and (out[1] == 1).all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_sgd_uap_respects_its_budget_and_is_deterministic(lms5, fcn, norm):
    x, y = lms5.split("val")
    kw = dict(norm=norm, eps=0.3, step_size=0.05, steps=5, epochs=1, seed=3)
    v = sgd_uap(fcn, x, y, **kw)
    assert v.shape == (50,)
    if norm == "l2":
        assert v.norm() <= 0.3 * (1 + 1e-5) and v.norm() > 0.29
    else:
        assert v.abs().max() <= 0.3 + 1e-6
    assert torch.equal(v, sgd_uap(fcn, x, y, **kw))
    if norm == "l2":  # (ℓ∞ sign steps reach the same corner of the box from any shuffle)
        assert not torch.equal(v, sgd_uap(fcn, x, y, **{**kw, "seed": 4}))  # another shuffle, another path


def test_svd_uap_decomposes_the_row_normalised_matrix(lms5, monkeypatch):
    # one big perturbation along e0 and ten small ones along ±e1: unnormalised, e0 would win (σ² 100² vs 10);
    # with each point voting once (the fix of §12.4) the shared direction e1 wins (σ² 10 vs 1)
    p = torch.zeros(11, 50)
    p[0, 0] = 100.0
    p[1:, 1] = torch.tensor([1.0, -1.0] * 5)
    monkeypatch.setattr(uap_module, "pgd_perturb", lambda *a, **k: p)
    v = svd_uap(None, torch.zeros(11, 50), torch.zeros(11), PGDConfig(eps=1.0, step_size=0.1))
    torch.testing.assert_close(v, torch.nn.functional.one_hot(torch.tensor(1), 50).float(), atol=1e-6, rtol=0)


def test_svd_uap_of_a_model_on_s_is_the_s_direction(lms5):
    x, y = lms5.split("val")
    cfg = PGDConfig(eps=relative_to_range(lms5, 1.0), step_size=relative_to_range(lms5, 0.05), steps=10)
    v = svd_uap(CoordinateModel(lms5.rotation, 50), x, y, cfg)
    assert v.norm() == pytest.approx(1.0, abs=1e-5)
    s_direction = torch.as_tensor(lms5.rotation[0], dtype=torch.float32)
    assert abs(float(v @ s_direction)) > 0.9999


@pytest.mark.parametrize("method", ["sgd", "svd"])
def test_label_signed_uap_breaks_the_lms5_fcn_along_s(lms5, fcn, method):
    r = uap_audit(fcn, lms5, method=method, eps=1.0, seed=0)
    assert json.loads(json.dumps(r)) == r
    assert r["clean_accuracy"] == 1.0
    assert r["accuracy"] <= 0.05 and r["fit_accuracy"] <= 0.05
    assert r["fooling_rate"] == pytest.approx(1 - r["accuracy"])  # every point started correct
    assert r["uap_norm"]["l2"] == pytest.approx(1.0, abs=1e-5)
    assert r["simple_share"] > 0.95 and r["block_share"]["linear"] == r["simple_share"]
    assert (r["simple_share"] ** 2 + r["block_share"]["49x 5-slab"] ** 2) == pytest.approx(1.0, abs=1e-6)
    assert len(r["uap"]) == 50 and abs(r["uap"][0]) == max(abs(u) for u in r["uap"])
    assert (r["fit_split"], r["eval_split"], r["label_signed"], r["seed"]) == ("val", "test", True, 0)
    if method == "svd":
        assert r["sign"] in (1.0, -1.0) and r["pgd"]["eps"] == pytest.approx(relative_to_range(lms5, 1.0))


@pytest.mark.parametrize("method", ["sgd", "svd"])
def test_label_agnostic_uap_cannot_go_below_the_class_it_cannot_hurt(lms5, fcn, method):
    # One shared shift along the linear coordinate pushes one class over the boundary and the other away from
    # it, so at best it fools one class: accuracy stays near the smaller class share (~0.5), whatever ε.
    r = uap_audit(fcn, lms5, method=method, eps=3.0, label_signed=False, seed=0)
    _, y = lms5.split("test")
    smaller_class = min(float(np.mean(y == c)) for c in (0, 1))
    assert r["label_signed"] is False
    assert r["accuracy"] >= smaller_class - 0.03
    assert r["accuracy"] < 0.6  # it does fool one whole class


def test_fit_and_eval_splits_differ_and_eval_labels_never_steer_the_fit(lms5, fcn, monkeypatch):
    seen = []
    original = uap_module.sgd_uap

    def spy(model, x, y, **kw):
        seen.append(torch.as_tensor(x))
        return original(model, x, y, **kw)

    monkeypatch.setattr(uap_module, "sgd_uap", spy)
    r = uap_audit(fcn, lms5, method="sgd", eps=1.0, steps=5, epochs=1)
    assert torch.equal(seen[0], torch.from_numpy(lms5.split("val")[0]))
    on_train = uap_audit(fcn, lms5, method="sgd", eps=1.0, steps=5, epochs=1, fit_split="train")
    assert on_train["fit_split"] == "train" and on_train["uap"] != r["uap"]
    # flip every test label: the SVD direction and its sign are chosen on the fit split, so they do not move
    flipped = copy.copy(lms5)
    x_test, y_test = lms5.split("test")
    flipped.splits = {**lms5.splits, "test": (x_test, 1 - y_test)}
    cfg = PGDConfig(eps=relative_to_range(lms5, 1.0), step_size=relative_to_range(lms5, 0.05), steps=10)
    a = uap_audit(fcn, lms5, method="svd", eps=1.0, pgd=cfg)
    b = uap_audit(fcn, flipped, method="svd", eps=1.0, pgd=cfg)
    assert a["uap"] == b["uap"] and a["sign"] == b["sign"]
    # the original's protocol (fit and evaluate on test) stays available
    same = uap_audit(fcn, lms5, method="sgd", eps=1.0, steps=5, epochs=1, fit_split="test")
    assert same["fit_accuracy"] == same["accuracy"]


def test_uap_audit_is_deterministic_by_seed(lms5, fcn):
    kw = dict(method="sgd", eps=0.5, steps=3, epochs=1)
    assert uap_audit(fcn, lms5, seed=1, **kw) == uap_audit(fcn, lms5, seed=1, **kw)
    assert uap_audit(fcn, lms5, seed=1, **kw)["uap"] != uap_audit(fcn, lms5, seed=2, **kw)["uap"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "deepfool"}, "method"),
        ({"norm": "l1"}, "norm"),
        ({"eps": 0}, "eps"),
        ({"eps": float("inf")}, "eps"),
        ({"fit_split": "holdout"}, "holdout"),
        ({"steps": 0}, "steps"),
        ({"epochs": 1.5}, "epochs"),
        ({"step_size": -1}, "step_size"),
        ({"pgd": {"eps": 1}, "method": "svd"}, "PGDConfig"),
    ],
)
def test_bad_uap_arguments_raise_value_error_naming_them(lms5, kwargs, message):
    args = {"eps": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        uap_audit(LinearModel(50, 2), lms5, **args)


def test_multiclass_uap_is_label_agnostic(lms5):
    ds = copy.copy(lms5)
    ds.num_classes = 3
    r = uap_audit(LinearModel(50, 3), ds, method="sgd", eps=0.5, steps=2, epochs=1)
    assert r["label_signed"] is False


def test_uap_on_images_linf():
    ds = tiny_images()
    r = uap_audit(TopHalfModel(), ds, method="sgd", norm="linf", eps=0.2, step_size=0.05, steps=5, epochs=1)
    assert data_bounds(ds)[0] >= 0 and data_bounds(ds)[1] <= 1
    assert r["uap_norm"]["linf"] <= 0.2 + 1e-6
    assert r["accuracy"] == 0.0 and r["clean_accuracy"] == 1.0
    assert r["block_share"]["mnist"] == pytest.approx(1.0) and r["block_share"]["cifar"] == 0.0
    assert "uap" not in r  # 6,144 coordinates: too many to return
    svd = uap_audit(
        TopHalfModel(),
        ds,
        method="svd",
        norm="linf",
        eps=0.2,
        pgd=PGDConfig(norm="l2", eps=2.0, step_size=0.5, steps=5, bounds=(0.0, 1.0), rand_eps=0.0),
    )
    assert svd["uap_norm"]["linf"] == pytest.approx(0.2) and svd["accuracy"] == 0.0
    # eps·sign(v₁) fills the ℓ∞ budget where v₁ is non-zero; with no random start that is the top half only
    assert svd["simple_share"] == pytest.approx(1.0)
