import pytest
import torch

from sbengine.adversarial import frozen_batchnorm_statistics
from sbengine.data import build_dataset
from sbengine.device import seed_everything
from sbengine.models import build_model
from sbengine.train import TrainConfig, train


@pytest.fixture(scope="module")
def lms5():
    return build_dataset({"preset": "LMS-5", "n_train": 2000, "n_val": 300, "n_test": 300, "seed": 0})


def adversarial_config(**overrides):
    cfg = {
        "lr": 0.1,
        "eval_every": 40,
        "select": "best_val",
        "stop": {"max_updates": 120},
        "adversarial": {
            "attack": {"norm": "l2", "eps": 0.3, "step_size": 0.1, "steps": 3},
            "eval_examples": 200,
        },
    }
    cfg.update(overrides)
    return TrainConfig.from_dict(cfg)


def test_adversarial_training_records_robust_and_randomized_metrics(lms5):
    seed_everything(0)
    model = build_model({"name": "fcn", "width": 32, "depth": 1}, input_shape=(50,), num_classes=2)
    result = train(model, lms5, adversarial_config(), seed=0)
    rows = result.history
    assert [r["step"] for r in rows] == [0, 40, 80, 120]
    for key in ("robust_accuracy", "s_randomized_accuracy", "sc_randomized_accuracy", "val_accuracy"):
        assert all(0.0 <= r[key] <= 1.0 for r in rows), key
    assert all("batch_loss" in r for r in rows[1:])
    best = max(rows[1:], key=lambda r: (r["robust_accuracy"], r["step"]))
    assert result.selected_step == best["step"]  # selection on robust validation accuracy
    assert rows[-1]["robust_accuracy"] > rows[0]["robust_accuracy"]


def test_adversarial_training_is_deterministic(lms5):
    weights = []
    for _ in range(2):
        seed_everything(1)
        model = build_model({"name": "fcn", "width": 16, "depth": 1}, input_shape=(50,), num_classes=2)
        train(model, lms5, adversarial_config(stop={"max_updates": 30}), seed=1)
        weights.append(model.state_dict())
    for a, b in zip(weights[0].values(), weights[1].values(), strict=True):
        assert torch.equal(a, b)


def test_attack_does_not_move_batchnorm_running_statistics():
    seed_everything(0)
    model = build_model(
        {"name": "fcn", "width": 8, "depth": 1, "batch_norm": True}, input_shape=(5,), num_classes=2
    )
    model.train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    with frozen_batchnorm_statistics(model):
        model(torch.randn(16, 5) * 3 + 1)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.num_batches_tracked, before[1])
    assert bn.momentum == 0.1
    model(torch.randn(16, 5) * 3 + 1)
    assert not torch.equal(bn.running_mean, before[0])


@pytest.mark.parametrize(
    ("adversarial", "message"),
    [
        ({"attack": {"norm": "l3", "eps": 0.1, "step_size": 0.1}}, "pgd.norm"),
        ({"attack": {"eps": 0.1}}, "pgd.step_size is required"),
        ({"eps": 0.1}, "unknown option 'eps'"),
        ({"attack": {"eps": 0.1, "step_size": 0.1}, "eval_examples": 0}, "eval_examples"),
    ],
)
def test_bad_adversarial_settings(adversarial, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({"adversarial": adversarial})
