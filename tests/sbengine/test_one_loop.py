"""Single runs and vectorized ensemble members follow one set of run rules (sbengine.train_rules).

The same config is trained both ways and must stop at the same step, for the same reason, select the same
step and record the same evaluations.
"""

import pytest

from sbengine.data import build_dataset
from sbengine.device import seed_everything
from sbengine.ensemble import member_seeds, train_ensemble
from sbengine.ensemble_train import train_stacked
from sbengine.models import build_model
from sbengine.train import StopRule, TrainConfig, train

FCN = {"name": "fcn", "width": 16, "depth": 1}


@pytest.fixture(scope="module")
def lms5():
    return build_dataset({"preset": "LMS-5", "n_train": 1000, "n_val": 300, "n_test": 300, "seed": 0})


def single_runs(ds, cfg, seeds):
    out = []
    for s in seeds:
        seed_everything(s)
        model = build_model(FCN, input_shape=ds.input_shape, num_classes=ds.num_classes)
        out.append(train(model, ds, cfg, seed=s))
    return out


def evaluations(result):
    """The history without its timings, which are the only thing allowed to differ."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]


def assert_same_runs(singles, members):
    for single, member in zip(singles, members, strict=True):
        assert (member.updates, member.epochs, member.stopped_because, member.selected_step) == (
            single.updates,
            single.epochs,
            single.stopped_because,
            single.selected_step,
        )
        # the weights are bit for bit equal on CPU, so every evaluation is; only the batch losses, summed
        # from the vmap'ed loss values, may differ in their last bit
        assert [{k: v for k, v in row.items() if k != "batch_loss"} for row in evaluations(member)] == [
            {k: v for k, v in row.items() if k != "batch_loss"} for row in evaluations(single)
        ]
        for m_row, s_row in zip(member.history, single.history, strict=True):
            assert m_row.get("batch_loss") == pytest.approx(s_row.get("batch_loss"), rel=1e-6)
        assert member.metrics == single.metrics


CASES = {
    # converges on train accuracy at an evaluation and stops right there (the two seeds at different steps)
    "train-accuracy-stop": TrainConfig(
        lr=0.3, eval_every=10, stop=StopRule(train_accuracy=0.99, max_updates=400)
    ),
    # converges on train loss, then runs 5 more updates (a stop between evaluations, so a final evaluation);
    # Adam's large step makes validation accuracy wobble, so a best-on-validation step can be an earlier one
    "patience-best-val": TrainConfig(
        optimizer="adam",
        lr=0.2,
        eval_every=3,
        select="best_val",
        stop=StopRule(train_loss=0.02, max_updates=300, patience_updates=5),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_vectorized_members_stop_and_select_like_single_runs(lms5, case):
    cfg = CASES[case]
    seeds = member_seeds(3, 2)
    singles = single_runs(lms5, cfg, seeds)
    assert all(r.stopped_because == "converged" for r in singles)
    assert singles[0].updates != singles[1].updates  # one member leaves the stack before the other
    if case == "patience-best-val":
        assert all(r.updates % cfg.eval_every != 0 for r in singles)
        assert any(r.selected_step < r.updates for r in singles)
    _, alone = train_ensemble(FCN, lms5, cfg, size=1, seed=seeds[0], vectorize="always")
    assert_same_runs(singles[:1], alone)
    _, together = train_ensemble(FCN, lms5, cfg, size=2, seed=3, vectorize="always")
    assert_same_runs(singles, together)


ADVERSARIAL = {
    "lr": 0.1,
    "eval_every": 5,
    "select": "best_val",
    "stop": {"train_loss": 0.66, "max_updates": 60, "patience_updates": 2},
    "adversarial": {"attack": {"norm": "l2", "eps": 0.3, "step_size": 0.1, "steps": 2}, "eval_examples": 100},
}


def test_adversarial_stop_uses_the_adversarial_batch_loss_and_ensembles_route_to_train(lms5):
    cfg = TrainConfig.from_dict(ADVERSARIAL)
    seeds = member_seeds(1, 2)
    singles = single_runs(lms5, cfg, seeds)
    for r in singles:
        first = next(h for h in r.history[1:] if h["batch_loss"] < 0.66)
        assert r.stopped_because == "converged" and r.updates == first["step"] + 2
        # the clean train loss got there earlier: the stop rule really read the adversarial one
        assert any(h["train_loss"] < 0.66 for h in r.history[1:] if h["step"] < first["step"])
        assert r.selected_step == max(r.history[1:], key=lambda h: (h["robust_accuracy"], h["step"]))["step"]
    # no stacked PGD: "auto" trains adversarial members one by one with train(), "always" refuses
    _, members = train_ensemble(FCN, lms5, cfg, size=2, seed=1)
    assert_same_runs(singles, members)
    with pytest.raises(ValueError, match="cannot be trained vectorized"):
        train_ensemble(FCN, lms5, cfg, size=2, seed=1, vectorize="always")
    with pytest.raises(ValueError, match="adversarial training cannot be vectorized"):
        train_stacked([build_model(FCN, input_shape=lms5.input_shape, num_classes=2)], lms5, cfg, seeds=[1])
