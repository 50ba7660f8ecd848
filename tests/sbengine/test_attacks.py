"""PGD (docs/method.md §7.1) and where its budget goes (§8, nb06), on hand-made models for exact checks and on
a quickly trained LMS-5 FCN for the simplicity-bias figure. The helpers here are shared with test_uap.py.

It is over 400 lines because its helpers are shared with test_uap.py and its trained model is built once
per module.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbengine.attacks import (
    _STREAM_START,
    PGDConfig,
    _box,
    _random_start,
    block_shares,
    data_bounds,
    mass_shares,
    pgd,
    pgd_audit,
    pgd_perturb,
    relative_to_range,
)
from sbengine.data import Dataset, FeatureBlock, build_dataset, image_region_indices
from sbengine.device import generator
from sbengine.models import build_model
from sbengine.train import StopRule, TrainConfig, train

IMAGE_SHAPE = (3, 64, 32)


# ----------------------------------------------------------------------------------------------- helpers


def small_lms5() -> Dataset:
    return build_dataset({"preset": "LMS-5", "n_train": 4000, "n_val": 1000, "n_test": 1000, "seed": 0})


def trained_fcn(dataset: Dataset) -> torch.nn.Module:
    """A (50,1)-FCN: 400 SGD updates at lr 0.1 reach 100% test accuracy on the small LMS-5."""
    torch.manual_seed(0)
    model = build_model(
        {"name": "fcn", "width": 50, "depth": 1}, input_shape=dataset.input_shape, num_classes=2
    )
    result = train(
        model, dataset, TrainConfig(lr=0.1, eval_every=400, stop=StopRule(max_updates=400)), seed=0
    )
    assert result.metrics["test_accuracy"] == 1.0
    return model.eval()


class CoordinateModel(torch.nn.Module):
    """Looks only at canonical coordinate ``coord`` (through the rotation): logits ``scale·(−z, z)``."""

    def __init__(self, q: np.ndarray | None, d: int, coord: int = 0, scale: float = 10.0):
        super().__init__()
        w = torch.zeros(d, dtype=torch.float64)
        w[coord] = 1.0
        direction = torch.as_tensor(q, dtype=torch.float64).T @ w if q is not None else w
        self.register_buffer("direction", direction.float())
        self.scale = scale

    def forward(self, x):
        s = x.flatten(1) @ self.direction
        return torch.stack([-s, s], dim=1) * self.scale


class ConstantModel(torch.nn.Module):
    """Ignores its input (zero gradient), so a PGD perturbation is exactly its random start."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.arange(num_classes, dtype=torch.float32))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


def tiny_images(n: int = 64, seed: int = 0) -> Dataset:
    """MNIST-CIFAR-shaped: (3, 64, 32) pixels in [0, 1]; the label is whether the top half is bright."""
    rng = np.random.default_rng(seed)
    top = np.asarray(image_region_indices(IMAGE_SHAPE, rows=(0, 32)))
    bottom = np.asarray(image_region_indices(IMAGE_SHAPE, rows=(32, 64)))
    splits = {}
    for name in ("train", "val", "test"):
        y = rng.permutation(np.arange(n) % 2).astype(np.int64)
        x = rng.uniform(0.0, 1.0, size=(n, int(np.prod(IMAGE_SHAPE)))).astype(np.float32)
        x[:, top] = (x[:, top] + np.where(y == 1, 0.1, -0.1)[:, None]).clip(0, 1)
        splits[name] = (x.reshape(n, *IMAGE_SHAPE), y)
    blocks = [
        FeatureBlock("mnist", "image", tuple(int(i) for i in top)),
        FeatureBlock("cifar", "image", tuple(int(i) for i in bottom)),
    ]
    return Dataset(
        name="tiny-images",
        splits=splits,
        input_shape=IMAGE_SHAPE,
        num_classes=2,
        blocks=blocks,
        simple_blocks=[0],
        rotation=None,
        seed=seed,
    )


class TopHalfModel(torch.nn.Module):
    """Classifies a tiny image by the mean brightness of its top half only."""

    def __init__(self):
        super().__init__()
        w = torch.zeros(IMAGE_SHAPE)
        w[:, :32, :] = 1.0 / (3 * 32 * 32)
        self.register_buffer("w", w.flatten())

    def forward(self, x):
        s = (x.flatten(1) @ self.w - 0.5) * 200
        return torch.stack([-s, s], dim=1)


class LinearModel(torch.nn.Module):
    """A fixed random linear classifier with ``num_classes`` outputs."""

    def __init__(self, d: int, num_classes: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(d, num_classes, generator=g))

    def forward(self, x):
        return x.flatten(1) @ self.w


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lms5():
    return small_lms5()


@pytest.fixture(scope="module")
def fcn(lms5):
    return trained_fcn(lms5)


def _test_tensors(ds: Dataset, n: int | None = None):
    x, y = ds.split("test")
    return torch.from_numpy(x[:n]), torch.from_numpy(y[:n])


# ----------------------------------------------------------------------------------------------- config


def test_config_round_trips_and_is_json():
    cfg = PGDConfig.from_dict({"norm": "linf", "eps": 0.3, "step_size": 0.12, "steps": 7, "bounds": [0, 1]})
    assert cfg.bounds == (0, 1)
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert PGDConfig.from_dict(d) == cfg


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nrom": "l2"}, "'nrom'"),
        ({"norm": "l3"}, "pgd.norm"),
        ({"eps": -1.0}, "pgd.eps"),
        ({"eps": float("nan")}, "pgd.eps"),
        ({"step_size": 0}, "pgd.step_size"),
        ({"steps": 2.5}, "pgd.steps"),
        ({"steps": 0}, "pgd.steps"),
        ({"loss": "targetted"}, "pgd.loss"),
        ({"rand_eps": -0.1}, "pgd.rand_eps"),
        ({"restarts": 0}, "pgd.restarts"),
        ({"bounds": [1.0, 0.0]}, "pgd.bounds"),
        ({"bounds": [0.0]}, "pgd.bounds"),
        ({"minimal": 1}, "pgd.minimal"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(change, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        PGDConfig.from_dict({"eps": 1.0, "step_size": 0.1, **change})


def test_missing_budget_and_non_object_raise():
    with pytest.raises(ValueError, match="pgd.step_size is required"):
        PGDConfig.from_dict({"eps": 1.0})
    with pytest.raises(ValueError, match="object"):
        PGDConfig.from_dict([1, 2])


def test_data_bounds_and_relative_budget(lms5):
    lo, hi = data_bounds(lms5)
    everything = np.concatenate([x.ravel() for x, _ in lms5.splits.values()])
    assert (lo, hi) == (float(everything.min()), float(everything.max()))
    assert relative_to_range(lms5, 0.5) == pytest.approx(0.5 * (hi - lo))


# ----------------------------------------------------------------------------------------------- projections


def test_linf_projection_and_box_bounds(lms5):
    x, y = _test_tensors(lms5, 300)
    model = LinearModel(50, 2)
    cfg = PGDConfig(norm="linf", eps=0.2, step_size=0.05, steps=10, bounds=(-1.0, 1.0))
    delta = pgd(model, x, y, cfg, seed=1)
    adv = x + delta
    assert adv.min() >= -1 - 1e-6 and adv.max() <= 1 + 1e-6  # the box clip comes last and always holds
    inside = (x >= -1) & (x <= 1)  # entries already outside the box are pulled onto it, beyond ε
    assert not inside.all()
    assert delta[inside].abs().max() <= 0.2 + 1e-6
    assert ((delta[inside].abs() - 0.2).abs() < 1e-6).float().mean() > 0.5  # sign steps fill the l∞ ball


def test_l2_projection_and_box_bounds(lms5):
    x, y = _test_tensors(lms5, 300)
    cfg = PGDConfig(norm="l2", eps=0.7, step_size=0.2, steps=10, bounds=data_bounds(lms5))
    delta = pgd(LinearModel(50, 2), x, y, cfg, seed=1)
    norms = delta.norm(dim=1)
    assert norms.max() <= 0.7 * (1 + 1e-5)
    assert (
        norms.min() > 0.6
    )  # the step budget (2.0) exceeds ε: every example reaches the sphere, bar clipping
    lo, hi = data_bounds(lms5)
    assert (x + delta).min() >= lo - 1e-6 and (x + delta).max() <= hi + 1e-6


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_random_start_is_within_rand_eps(lms5, norm):
    x, y = _test_tensors(lms5, 200)
    cfg = PGDConfig(norm=norm, eps=1.0, step_size=0.1, steps=3, rand_eps=0.01)
    delta = pgd(ConstantModel(), x, y, cfg, seed=3)  # zero gradient: δ is the random start
    if norm == "linf":
        assert delta.abs().max() <= 0.01 and delta.abs().max() > 0.009
        assert (delta > 0).float().mean() == pytest.approx(0.5, abs=0.05)
    else:
        torch.testing.assert_close(delta.norm(dim=1), torch.full((200,), 0.01), rtol=1e-5, atol=0)
    assert not torch.equal(delta[0], delta[1])
    zero = pgd(ConstantModel(), x, y, PGDConfig(norm=norm, eps=1.0, step_size=0.1, steps=3, rand_eps=0.0))
    assert torch.count_nonzero(zero) == 0


def test_restarts_keep_each_examples_worst_and_ties_go_to_the_later(lms5):
    x, y = _test_tensors(lms5, 200)
    model = LinearModel(50, 2, seed=4)
    # steps of 1e-7 leave each restart at its random start; a large start makes the restarts differ a lot
    cfg = PGDConfig(norm="l2", eps=5.0, step_size=1e-7, steps=1, rand_eps=2.0, restarts=4)
    delta = pgd(model, x, y, cfg, seed=5)
    starts = torch.stack(
        [_box(_random_start(x, cfg, generator(5, _STREAM_START, 0, r)), x, None) for r in range(4)]
    )
    with torch.no_grad():
        ce = torch.stack([F.cross_entropy(model(x + s), y, reduction="none") for s in starts])
    chosen = 3 - ce.flip(0).argmax(0)  # the last maximum: ties go to the later restart
    assert len(set(chosen.tolist())) > 1  # the restarts matter on this setup
    torch.testing.assert_close(delta, starts[chosen, torch.arange(200)], atol=1e-5, rtol=0)
    # with a constant model every restart ties: the last one wins
    flat = pgd(ConstantModel(), x, y, cfg, seed=5)
    torch.testing.assert_close(flat, starts[3], atol=1e-5, rtol=0)
    # more restarts never give a weaker attack than the first alone (restart 0 is shared)
    single = pgd(model, x, y, PGDConfig(**{**cfg.to_dict(), "restarts": 1}), seed=5)
    with torch.no_grad():
        assert (
            F.cross_entropy(model(x + delta), y, reduction="none")
            >= F.cross_entropy(model(x + single), y, reduction="none") - 1e-5
        ).all()


# ----------------------------------------------------------------------------------------------- losses


def test_targeted_losses_move_toward_their_target(lms5):
    x, y3 = _test_tensors(lms5, 300)
    model = LinearModel(50, 3, seed=1)
    with torch.no_grad():
        y3 = model(x).argmax(1)  # labels the model gets right, so every move is the attack's doing
    cfg = dict(norm="l2", eps=20.0, step_size=0.5, steps=40, rand_eps=0.0)
    target = (y3 + 2) % 3
    d = pgd(model, x, y3, PGDConfig(**cfg, loss="targeted"), target=target)
    with torch.no_grad():
        assert (model(x + d).argmax(1) == target).float().mean() > 0.95
        d = pgd(model, x, y3, PGDConfig(**cfg, loss="plusone_targeted"))
        assert (model(x + d).argmax(1) == (y3 + 1) % 3).float().mean() > 0.95
        d = pgd(model, x, y3, PGDConfig(**cfg, loss="random_targeted"), seed=2)
        pred = model(x + d).argmax(1)
        assert (pred != y3).float().mean() > 0.95
        assert len(set(pred[y3 == 0].tolist())) == 2  # both other classes get drawn as targets
    binary = CoordinateModel(lms5.rotation, 50)
    _, y = _test_tensors(lms5, 300)
    for loss in ("binary_targeted", "binary_hybrid", "untargeted"):
        d = pgd(binary, x, y, PGDConfig(norm="l2", eps=3.0, step_size=0.2, steps=30, loss=loss))
        with torch.no_grad():
            assert (binary(x + d).argmax(1) == 1 - y).all(), loss


def test_targeted_needs_a_target_and_binary_losses_a_binary_model(lms5):
    x, y = _test_tensors(lms5, 10)
    with pytest.raises(ValueError, match="target"):
        pgd(LinearModel(50, 3), x, y, PGDConfig(eps=1.0, step_size=0.1, loss="targeted"))
    with pytest.raises(ValueError, match="binary"):
        pgd(LinearModel(50, 3), x, y, PGDConfig(eps=1.0, step_size=0.1, loss="binary_hybrid"))


class CountingModel(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_minimal_mode_stops_flipped_examples_and_the_loop(lms5):
    x, y = _test_tensors(lms5, 300)
    model = CountingModel(CoordinateModel(lms5.rotation, 50))
    cfg = PGDConfig(norm="l2", eps=0.01, step_size=0.02, steps=1000, rand_eps=0.0, minimal=True)
    delta = pgd(model, x, y, cfg)
    with torch.no_grad():
        assert (model(x + delta).argmax(1) != y).all()
    assert model.calls < 200  # stopped long before 1000 steps once everything had flipped
    # no ε-projection (ε = 0.01 is far too small), and each example stopped within one step of the boundary:
    # the gradient of this model lies along S, so the distance travelled is |z_S| rounded up to a step
    z_s = (x.double() @ torch.as_tensor(lms5.rotation, dtype=torch.float64).T)[:, 0].abs().float()
    norms = delta.norm(dim=1)
    assert (norms >= z_s - 1e-4).all() and (norms <= z_s + 0.02 + 1e-4).all()
    assert norms.max() > 0.5


# ----------------------------------------------------------------------------------------------- whole splits


def test_pgd_perturb_batches_like_pgd_and_is_deterministic(lms5):
    x, y = _test_tensors(lms5)
    model = LinearModel(50, 2)
    cfg = PGDConfig(norm="l2", eps=0.5, step_size=0.1, steps=5, rand_eps=0.05)
    full = pgd_perturb(model, x, y, cfg, seed=7, batch_size=256)
    assert full.shape == x.shape
    torch.testing.assert_close(full[:256], pgd(model, x[:256], y[:256], cfg, seed=7))
    assert torch.equal(full, pgd_perturb(model, x, y, cfg, seed=7, batch_size=256))
    assert not torch.equal(full, pgd_perturb(model, x, y, cfg, seed=8, batch_size=256))


def test_pgd_perturb_uses_eval_mode_and_restores_it(lms5):
    x, y = _test_tensors(lms5, 64)
    seen = []

    class ModeProbe(LinearModel):
        def forward(self, x):
            seen.append(self.training)
            return super().forward(x)

    model = ModeProbe(50, 2).train()
    pgd_perturb(model, x, y, PGDConfig(eps=0.5, step_size=0.1, steps=2))
    assert seen and not any(seen)
    assert model.training


def test_progress_callback_that_raises_cancels(lms5):
    x, y = _test_tensors(lms5)
    calls = []

    def cancel(p):
        calls.append(p)
        if len(calls) == 3:
            raise RuntimeError("canceled")

    with pytest.raises(RuntimeError, match="canceled"):
        pgd_perturb(LinearModel(50, 2), x, y, PGDConfig(eps=0.5, step_size=0.1, steps=50), progress=cancel)
    assert len(calls) == 3 and calls[0].stage == "pgd" and calls[0].total == 50


# ----------------------------------------------------------------------------------------------- shares


def test_block_shares_squares_sum_to_one_per_example(lms5):
    delta = torch.randn(100, 50, generator=torch.Generator().manual_seed(0))
    blocks = [list(b.indices) for b in lms5.blocks]
    shares = mass_shares(delta, lms5, blocks)
    torch.testing.assert_close((shares**2).sum(1), torch.ones(100, dtype=torch.float64))
    summary = block_shares(delta, lms5)
    assert set(summary) == {b.name for b in lms5.blocks}
    assert summary["linear"]["mean"] == pytest.approx(float(shares[:, 0].mean()))
    assert summary["linear"]["std"] >= 0
    # a perturbation along S's input direction is all on S
    along_s = torch.as_tensor(lms5.rotation[0], dtype=torch.float32).repeat(3, 1)
    assert block_shares(along_s, lms5)["linear"]["mean"] == pytest.approx(1.0, abs=1e-6)
    # zero perturbations have no direction and are left out
    assert math.isnan(block_shares(torch.zeros(2, 50), lms5)["linear"]["mean"])


def test_pgd_audit_on_trained_lms5_fcn_puts_its_mass_on_s(lms5, fcn):
    cfg = PGDConfig(
        norm="l2",
        eps=relative_to_range(lms5, 0.5),
        step_size=relative_to_range(lms5, 0.05),
        steps=20,
        bounds=data_bounds(lms5),
    )
    r = pgd_audit(fcn, lms5, cfg, seed=0)
    assert json.loads(json.dumps(r)) == r
    assert r["clean_accuracy"] == 1.0 and r["accuracy"] <= 0.01
    assert r["simple_share"] > 0.95
    assert r["block_share"]["linear"]["mean"] == r["simple_share"]
    assert r["block_share"]["49x 5-slab"]["mean"] < 0.3
    assert r["n"] == 1000 and r["seed"] == 0 and r["config"] == cfg.to_dict()
    assert r["mean_l2_norm"] <= cfg.eps * (1 + 1e-5)
    heat = np.asarray(r["heatmap"])
    assert heat.shape == (20, 50)
    np.testing.assert_allclose(np.abs(heat).max(1), 1.0, rtol=1e-6)
    assert (np.abs(heat[:, 0]) == 1.0).all()  # every one of them peaks on the linear coordinate
    assert pgd_audit(fcn, lms5, cfg, seed=0) == r


def test_pgd_audit_on_images():
    ds = tiny_images()
    cfg = PGDConfig(norm="linf", eps=0.3, step_size=0.12, steps=7, bounds=(0.0, 1.0))
    r = pgd_audit(TopHalfModel(), ds, cfg, split="val")
    assert r["clean_accuracy"] == 1.0 and r["accuracy"] == 0.0
    assert r["block_share"]["mnist"]["mean"] > 0.999  # the model ignores the bottom half: so does the attack
    assert r["simple_share"] == r["block_share"]["mnist"]["mean"]
    assert "heatmap" not in r  # 6,144 coordinates: too many for a per-coordinate heatmap
    x, y = ds.split("val")
    delta = pgd_perturb(TopHalfModel(), x, y, cfg)
    adv = torch.from_numpy(x) + delta
    assert adv.min() >= 0 and adv.max() <= 1 and delta.abs().max() <= 0.3 + 1e-6
    with pytest.raises(ValueError, match="split"):
        pgd_audit(TopHalfModel(), ds, cfg, split="holdout")
