import json
import math

import pytest
import torch

import sbengine.ensemble as ensemble_module
from sbengine.data import build_dataset
from sbengine.data.dataset import Dataset, FeatureBlock
from sbengine.device import seed_everything
from sbengine.ensemble import (
    Ensemble,
    can_vectorize,
    ensemble_audit_summary,
    fit_head,
    member_seeds,
    train_ensemble,
)
from sbengine.models import build_model
from sbengine.train import StepSchedule, StopRule, TrainConfig, train

SMALL = {"preset": "LMS-5", "n_train": 3000, "n_val": 500, "n_test": 500, "seed": 0}
FCN = {"name": "fcn", "width": 32, "depth": 1}
CNN = {"name": "cnn1d", "filters": 4, "kernel": 3}


@pytest.fixture(scope="module")
def lms5():
    return build_dataset(SMALL)


@pytest.fixture(scope="module")
def trained(lms5):
    """Three (32,1)-FCN members trained to full train accuracy on LMS-5 (vectorized)."""
    cfg = TrainConfig(lr=0.1, eval_every=20, stop=StopRule(train_accuracy=1.0, max_updates=2000))
    return train_ensemble(FCN, lms5, cfg, size=3, seed=0)


@pytest.fixture(scope="module")
def weak(lms5):
    """Three briefly trained members: room for a head to improve on the average."""
    cfg = TrainConfig(lr=0.02, eval_every=10**6, stop=StopRule(max_updates=15))
    return train_ensemble({"name": "fcn", "width": 8, "depth": 1}, lms5, cfg, size=3, seed=5)[0]


def one_by_one(architecture, ds, cfg, seeds):
    out = []
    for s in seeds:
        seed_everything(s)
        model = build_model(architecture, input_shape=ds.input_shape, num_classes=ds.num_classes)
        out.append((model, train(model, ds, cfg, seed=s)))
    return out


def assert_same_members(reference, models, results, *, exact=False):
    for (ref_model, ref), model, result in zip(reference, models, results, strict=True):
        for key, value in ref_model.state_dict().items():
            if exact:
                assert torch.equal(value, model.state_dict()[key]), key
            else:
                torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-5, atol=1e-5)
        assert (result.updates, result.epochs, result.stopped_because, result.selected_step) == (
            ref.updates,
            ref.epochs,
            ref.stopped_because,
            ref.selected_step,
        )
        assert [h["step"] for h in result.history] == [h["step"] for h in ref.history]
        for key, value in ref.metrics.items():
            assert result.metrics[key] == pytest.approx(value, abs=1e-5), key


def test_member_seeds_are_deterministic_distinct_and_start_at_seed():
    seeds = member_seeds(7, 50)
    assert seeds == member_seeds(7, 50) and len(set(seeds)) == 50 and seeds[0] == 7
    assert not set(member_seeds(0, 10)) & set(member_seeds(1, 10))
    for bad in [(0, 0), (0, 1001), (1.5, 3), (0, True)]:
        with pytest.raises(ValueError):
            member_seeds(*bad)


EQUIVALENCE_CASES = {
    # members converge (train loss) at different evaluations, then run 3 patience updates each; the lr drops
    # 10% every epoch (12 batches): members leaving the stack must not disturb the others' lr or momentum
    "sgd-momentum-wd-loss-stop": (
        FCN,
        TrainConfig(
            lr=0.02,
            momentum=0.9,
            weight_decay=5e-4,
            eval_every=5,
            schedule=StepSchedule(step_epochs=1, gamma=0.9),
            stop=StopRule(train_loss=0.25, max_updates=300, patience_updates=3),
        ),
    ),
    "max-updates-only": (
        FCN,
        TrainConfig(lr=0.1, weight_decay=5e-5, batch_size=128, eval_every=17, stop=StopRule(max_updates=60)),
    ),
    "adam-loss-stop": (
        FCN,
        TrainConfig(
            optimizer="adam",
            lr=0.01,
            weight_decay=1e-4,
            eval_every=3,
            stop=StopRule(train_loss=0.1, max_updates=200, patience_updates=2),
        ),
    ),
    # a large Adam step makes validation accuracy wobble, so the best-on-val snapshot is an earlier one
    "adam-best-val": (
        FCN,
        TrainConfig(
            optimizer="adam",
            lr=0.05,
            weight_decay=1e-4,
            eval_every=4,
            select="best_val",
            stop=StopRule(max_updates=60),
        ),
    ),
    "rmsprop-max-epochs": (
        FCN,
        TrainConfig(
            optimizer="rmsprop",
            lr=0.003,
            momentum=0.5,
            batch_size=1000,
            eval_every=1,
            stop=StopRule(max_updates=100, max_epochs=2),
        ),
    ),
    "diverging": (
        {"name": "fcn", "width": 64, "depth": 1},
        TrainConfig(lr=100.0, eval_every=5, stop=StopRule(max_updates=300)),
    ),
    "cnn1d-sgd": (
        CNN,
        TrainConfig(lr=0.05, momentum=0.9, eval_every=10, stop=StopRule(train_accuracy=0.95, max_updates=60)),
    ),
}


@pytest.mark.parametrize("case", list(EQUIVALENCE_CASES))
def test_vectorized_training_equals_one_by_one(lms5, case):
    architecture, cfg = EQUIVALENCE_CASES[case]
    models, results = train_ensemble(architecture, lms5, cfg, size=3, seed=11, vectorize="always")
    assert_same_members(one_by_one(architecture, lms5, cfg, member_seeds(11, 3)), models, results)
    if case.endswith("loss-stop"):
        assert len({r.updates for r in results}) > 1  # members really stopped at different steps
        assert all(r.stopped_because == "converged" for r in results)
    if case == "adam-best-val":
        assert all(r.selected_step < r.updates for r in results)
    if case == "rmsprop-max-epochs":
        assert all(r.stopped_because == "max_epochs" and r.updates == 6 for r in results)
    if case == "diverging":
        assert {r.stopped_because for r in results} == {"diverged", "max_updates"}


def test_auto_vectorizes_small_same_architecture_members_only(lms5, monkeypatch):
    calls = []
    real = ensemble_module.train_stacked
    monkeypatch.setattr(ensemble_module, "train_stacked", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = TrainConfig(eval_every=5, stop=StopRule(max_updates=5))
    train_ensemble(FCN, lms5, cfg, size=2, seed=0)
    train_ensemble(CNN, lms5, cfg, size=2, seed=0)
    train_ensemble(FCN, lms5, cfg, size=1, seed=0)
    train_ensemble(FCN, lms5, cfg, size=2, seed=0, vectorize="never")
    assert len(calls) == 2
    assert can_vectorize(FCN) and can_vectorize(CNN) and can_vectorize({"name": "fcn", "activation": "prelu"})
    for arch in [
        {"name": "resnet18"},
        {"name": "gru", "hidden": 8},
        {"name": "fcn", "dropout": 0.1},
        {"name": "fcn", "input_dropout": 0.1},
        {"name": "fcn", "batch_norm": True},
    ]:
        assert not can_vectorize(arch)
        with pytest.raises(ValueError, match="cannot be trained vectorized"):
            train_ensemble(arch, lms5, cfg, size=2, seed=0, vectorize="always")
    with pytest.raises(ValueError, match="vectorize"):
        train_ensemble(FCN, lms5, cfg, size=2, seed=0, vectorize="sometimes")


@pytest.mark.parametrize(
    "architecture", [{"name": "gru", "hidden": 8}, {"name": "fcn", "width": 16, "dropout": 0.2}]
)
def test_auto_falls_back_to_one_by_one_with_identical_results(lms5, architecture):
    cfg = TrainConfig(lr=0.05, eval_every=4, stop=StopRule(max_updates=10))
    models, results = train_ensemble(architecture, lms5, cfg, size=2, seed=3)
    assert_same_members(one_by_one(architecture, lms5, cfg, member_seeds(3, 2)), models, results, exact=True)


def test_auto_trains_resnet_members_one_by_one_from_their_own_seeds(monkeypatch):
    """Training a ResNet here would take minutes; check the fallback's calls instead (same code as gru)."""
    ds = Dataset(
        name="tiny",
        splits={},
        input_shape=(3, 32, 32),
        num_classes=2,
        blocks=[FeatureBlock("all", "image", tuple(range(3072)))],
        simple_blocks=[0],
        rotation=None,
        seed=0,
    )
    calls = []
    monkeypatch.setattr(
        ensemble_module, "train", lambda model, dataset, cfg, *, seed, **_: calls.append((model, seed))
    )
    models, _ = train_ensemble({"name": "resnet18"}, ds, TrainConfig(), size=2, seed=4)
    assert [s for _, s in calls] == member_seeds(4, 2) and [m for m, _ in calls] == models
    seed_everything(member_seeds(4, 2)[1])
    expected = build_model({"name": "resnet18"}, input_shape=(3, 32, 32), num_classes=2)
    for key, value in expected.state_dict().items():
        assert torch.equal(models[1].state_dict()[key], value), key


def test_vectorized_progress_reports_and_a_raising_callback_stops(lms5):
    events = []
    cfg = TrainConfig(eval_every=50, stop=StopRule(max_updates=200))
    train_ensemble(FCN, lms5, cfg, size=2, seed=0, progress=events.append)
    assert events[-1].fraction == 1.0 and events[0].metrics["members_training"] == 2

    def cancel(p):
        if p.step >= 100:
            raise KeyboardInterrupt("canceled")

    with pytest.raises(KeyboardInterrupt):
        train_ensemble(FCN, lms5, cfg, size=2, seed=0, progress=cancel)


def test_combine_modes_start_as_the_average(lms5, trained):
    members, _ = trained
    x = torch.from_numpy(lms5.split("test")[0][:200])
    with torch.no_grad():
        logits = torch.stack([m(x) for m in members])
        average = logits.mean(0)
        torch.testing.assert_close(Ensemble(members, "logits")(x), average)
        probs = Ensemble(members, "probs")(x)
        torch.testing.assert_close(probs.exp(), torch.softmax(logits, -1).mean(0))
        for combine in ("linear", "mlp"):
            torch.testing.assert_close(Ensemble(members, combine)(x), average, rtol=1e-5, atol=1e-5)
    # class-major stacking (docs/method.md §6): column c·M + m is member m's class-c logit
    features = Ensemble(members, "linear").member_features(x)
    torch.testing.assert_close(features[:, 1 * 3 + 2], members[2](x)[:, 1])
    with pytest.raises(ValueError, match="combine"):
        Ensemble(members, "vote")


@pytest.mark.parametrize("combine", ["linear", "mlp"])
def test_fit_head_keeps_or_improves_val_accuracy_deterministically_without_test(lms5, weak, combine):
    cfg = TrainConfig(
        lr=0.05, weight_decay=5e-5, eval_every=10, stop=StopRule(train_loss=0.01, max_updates=120)
    )
    before = Ensemble(weak, combine)
    start = (before(torch.from_numpy(lms5.split("val")[0])).argmax(1).numpy() == lms5.split("val")[1]).mean()
    first = fit_head(before, lms5, cfg, seed=1)
    assert first.metrics["val_accuracy"] > start + 0.05 and first.selected_step > 0
    assert "test_accuracy" not in first.history[0]
    x_test, y_test = lms5.split("test")
    shuffled = Dataset(**{**lms5.__dict__, "splits": {**lms5.splits, "test": (x_test, y_test[::-1].copy())}})
    again = Ensemble(weak, combine)
    second = fit_head(again, shuffled, cfg, seed=1)
    for a, b in zip(before.head.state_dict().values(), again.head.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert second.selected_step == first.selected_step
    with pytest.raises(ValueError, match="no head"):
        fit_head(Ensemble(weak, "logits"), lms5, cfg)
    no_val = Dataset(**{**lms5.__dict__, "splits": {k: v for k, v in lms5.splits.items() if k != "val"}})
    with pytest.raises(ValueError, match="validation"):
        fit_head(Ensemble(weak, combine), no_val, cfg)


@pytest.mark.parametrize("combine", ["linear", "mlp"])
def test_fit_head_keeps_the_average_when_training_only_hurts_validation(lms5, trained, combine):
    x_train, y_train = lms5.split("train")
    flipped = Dataset(**{**lms5.__dict__, "splits": {**lms5.splits, "train": (x_train, 1 - y_train)}})
    ensemble = Ensemble(trained[0], combine)
    start = {k: v.clone() for k, v in ensemble.head.state_dict().items()}
    result = fit_head(
        ensemble, flipped, TrainConfig(lr=0.5, eval_every=5, stop=StopRule(max_updates=30)), seed=1
    )
    assert max(h["val_accuracy"] for h in result.history[1:]) < 1.0  # every trained head is worse on val
    assert result.selected_step == 0 and result.metrics["val_accuracy"] == 1.0
    for key, value in start.items():
        assert torch.equal(ensemble.head.state_dict()[key], value), key


def test_ensemble_is_as_simplicity_biased_as_its_members(lms5, trained):
    members, results = trained
    assert all(r.metrics["test_accuracy"] >= 0.99 for r in results)
    summary = ensemble_audit_summary(Ensemble(members), members, lms5, repeats=2, seed=0)
    for row in [*summary["members"], summary["ensemble"]]:
        assert row["test_accuracy"] >= 0.99
        assert abs(row["s_randomized_auc"]["mean"] - 0.5) < 0.1
        assert row["sc_randomized_auc"]["mean"] > 0.97
        assert row["verdict_code"] == "exclusively_s"
    assert summary["same_verdict_as_members"] and summary["member_verdicts"] == {"exclusively_s": 3}
    assert summary["size"] == 3 and "exclusively_s" in summary["summary"]
    json.dumps(summary, allow_nan=False)
    assert not math.isnan(summary["ensemble"]["auc"])
