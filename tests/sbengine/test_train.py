import math

import pytest
import torch

from sbengine.data import build_dataset
from sbengine.device import seed_everything
from sbengine.models import build_model
from sbengine.progress import Progress
from sbengine.train import StopRule, TrainConfig, train

SMALL = {"preset": "LMS-5", "n_train": 3000, "n_val": 500, "n_test": 500, "seed": 0}


@pytest.fixture(scope="module")
def lms5():
    return build_dataset(SMALL)


def fcn(ds, seed=0, width=32):
    seed_everything(seed)
    return build_model({"name": "fcn", "width": width, "depth": 1}, input_shape=ds.input_shape, num_classes=2)


def test_trains_lms5_to_full_accuracy_and_stops_on_rule(lms5):
    cfg = TrainConfig(lr=0.1, eval_every=100, stop=StopRule(train_accuracy=1.0, max_updates=5000))
    result = train(fcn(lms5), lms5, cfg, seed=0)
    assert result.stopped_because == "converged"
    assert result.metrics["train_accuracy"] == 1.0
    assert result.metrics["test_accuracy"] >= 0.99
    assert result.updates < 5000 and result.updates % 100 == 0
    assert [h["step"] for h in result.history] == list(range(0, result.updates + 1, 100))
    assert "test_accuracy" not in result.history[0]  # the test split never steers training


def test_same_seed_same_weights_different_seed_different(lms5):
    cfg = TrainConfig(eval_every=50, stop=StopRule(max_updates=120))
    a, b, c = fcn(lms5), fcn(lms5), fcn(lms5)
    train(a, lms5, cfg, seed=1)
    train(b, lms5, cfg, seed=1)
    train(c, lms5, cfg, seed=2)
    for (ka, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), ka
    assert any(
        not torch.equal(va, vc)
        for va, vc in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )


def test_loss_stop_rule_and_patience(lms5):
    cfg = TrainConfig(eval_every=50, stop=StopRule(train_loss=0.3, max_updates=5000, patience_updates=7))
    result = train(fcn(lms5), lms5, cfg, seed=0)
    converged = next(h for h in result.history if h["train_loss"] < 0.3)
    assert result.stopped_because == "converged"
    assert result.updates == converged["step"] + 7


def test_max_epochs_caps_updates(lms5):
    cfg = TrainConfig(batch_size=1000, eval_every=1, stop=StopRule(max_updates=100, max_epochs=2))
    result = train(fcn(lms5), lms5, cfg, seed=0)
    assert result.updates == 6 and result.epochs == 2 and result.stopped_because == "max_epochs"


def test_divergence_stops_training(lms5):
    cfg = TrainConfig(lr=100.0, eval_every=5, stop=StopRule(max_updates=2000))
    result = train(fcn(lms5, width=64), lms5, cfg, seed=0)
    assert result.stopped_because == "diverged"
    last = result.history[-1]
    assert not math.isfinite(last["train_loss"]) or last["train_loss"] > 1e6


def test_best_on_validation_snapshot_is_restored(lms5):
    cfg = TrainConfig(lr=0.05, eval_every=20, select="best_val", stop=StopRule(max_updates=200))
    model = fcn(lms5)
    result = train(model, lms5, cfg, seed=0)
    best = max((h for h in result.history if h["step"] > 0), key=lambda h: (h["val_accuracy"], h["step"]))
    assert result.selected_step == best["step"]
    assert result.metrics["val_accuracy"] == pytest.approx(best["val_accuracy"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_optimizers_learn(lms5, optimizer):
    lr = 0.1 if optimizer == "sgd" else 1e-3
    cfg = TrainConfig(
        optimizer=optimizer, lr=lr, momentum=0.0, eval_every=100, stop=StopRule(max_updates=300)
    )
    result = train(fcn(lms5), lms5, cfg, seed=0)
    assert result.metrics["test_accuracy"] > 0.95


def test_step_schedule_lowers_learning_rate(lms5):
    seen = []
    cfg = TrainConfig.from_dict(
        {
            "lr": 0.1,
            "batch_size": 1000,
            "eval_every": 100,
            "schedule": {"step_epochs": 1, "gamma": 0.5},
            "stop": {"max_updates": 7},
        }
    )
    model = fcn(lms5)
    original_step = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self, *a, **k)

    torch.optim.SGD.step = spy
    try:
        train(model, lms5, cfg, seed=0)
    finally:
        torch.optim.SGD.step = original_step
    assert seen == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025])


def test_progress_callback_and_cancellation(lms5):
    events: list[Progress] = []

    class Stop(Exception):
        pass

    def callback(p: Progress) -> None:
        events.append(p)
        if p.step >= 300:
            raise Stop

    cfg = TrainConfig(eval_every=100, stop=StopRule(max_updates=10_000))
    with pytest.raises(Stop):
        train(fcn(lms5), lms5, cfg, seed=0, progress=callback)
    assert events[0].step == 0 and events[0].total == 10_000 and "train_accuracy" in events[0].metrics
    assert events[-1].step == 300 and 0 < events[-1].fraction < 1


def test_resume_from_checkpoint_matches_uninterrupted_run(lms5, tmp_path):
    cfg = TrainConfig(eval_every=40, stop=StopRule(max_updates=200))
    reference = fcn(lms5)
    ref_result = train(reference, lms5, cfg, seed=5)

    class Crash(Exception):
        pass

    def crash_at_160(p: Progress) -> None:
        if p.step == 160 and not p.metrics:
            raise Crash

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Crash):
        train(fcn(lms5), lms5, cfg, seed=5, progress=crash_at_160, checkpoint_path=ckpt, checkpoint_every=40)
    assert ckpt.exists()
    resumed = fcn(lms5, seed=123)  # different init: everything must come from the checkpoint
    result = train(resumed, lms5, cfg, seed=5, checkpoint_path=ckpt, checkpoint_every=40)
    assert result.updates == ref_result.updates == 200
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert [h["step"] for h in result.history] == [h["step"] for h in ref_result.history]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"lr": -1}, "lr must be"),
        ({"batch_size": 0}, "batch_size"),
        ({"stop": {"max_updates": 10**12}}, "max_updates"),
        ({"stop": {"train_accuracy": 2}}, "train_accuracy"),
        ({"stop": {"patience": 3}}, "unknown option 'patience'"),
        ({"select": "best_test"}, "select must be one of"),
        ({"learning_rate": 0.1}, "unknown option 'learning_rate'"),
        ({"schedule": {"step_epochs": 0, "gamma": 0.5}}, "step_epochs"),
    ],
)
def test_bad_configs_raise_clear_errors(config, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(config)
