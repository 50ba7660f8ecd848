"""The paper's notebook experiments as named, seeded runs (``sbaudit reproduce NAME``).

Each experiment is the notebook's configuration (PAPER_SPEC §5.2) with §12's fixes: a separate validation
split for model selection, seeds everywhere, randomization metrics averaged over repeated permutations.
``paper`` holds the figures the notebooks printed (§10.1), shown beside ours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sbengine.audit import run_audit
from sbengine.data import build_dataset
from sbengine.device import resolve_device, seed_everything
from sbengine.models import build_model
from sbengine.progress import ProgressCallback
from sbengine.train import TrainConfig, train


@dataclass(frozen=True)
class Experiment:
    title: str
    source: str
    dataset: dict[str, Any]
    architecture: dict[str, Any]
    training: dict[str, Any]
    paper: dict[str, float] = field(default_factory=dict)


def _sgd(lr: float, *, momentum: float = 0.0, wd: float, eval_every: int, select: str = "final",
         **stop: Any) -> dict[str, Any]:
    return {"optimizer": "sgd", "lr": lr, "momentum": momentum, "weight_decay": wd, "batch_size": 256,
            "eval_every": eval_every, "select": select, "stop": stop}


EXPERIMENTS: dict[str, Experiment] = {
    "lms5": Experiment(
        title="LMS-5, (100,2)-FCN: relies exclusively on the linear coordinate",
        source="notebook 01 (cells 5-9)",
        dataset={"preset": "LMS-5", "n_train": 100_000, "n_val": 10_000, "n_test": 10_000},
        architecture={"name": "fcn", "width": 100, "depth": 2},
        training=_sgd(0.1, wd=5e-5, eval_every=5000, train_accuracy=0.9999, max_updates=200_000),
        paper={"test_accuracy": 1.0, "auc": 1.0, "s_randomized_auc": 0.507, "sc_randomized_auc": 1.0,
               "s_randomized_accuracy": 0.508, "updates": 5000},
    ),
    "ms57": Experiment(
        title="MS-(5,7), (100,2)-FCN: relies exclusively on the 5-slab coordinate",
        source="notebook 01 (cells 12-16)",
        dataset={"preset": "MS-(5,7)", "n_train": 100_000, "n_val": 10_000, "n_test": 50_000},
        architecture={"name": "fcn", "width": 100, "depth": 2},
        training=_sgd(0.1, wd=5e-5, eval_every=5000, train_accuracy=0.9999, max_updates=200_000,
                      patience_updates=999),
        paper={"test_accuracy": 1.0, "auc": 1.0, "s_randomized_auc": 0.502, "sc_randomized_auc": 1.0,
               "s_randomized_accuracy": 0.500, "updates": 15000},
    ),
    "noisy-lms7": Experiment(
        title="noisy-LMS-7 (p = 0.1), (300,2)-FCN: sub-optimal generalization from the noisy linear coordinate",
        source="notebook 03 (cells 5-6)",
        dataset={"preset": "noisy-LMS-7", "n_train": 40_000, "n_val": 10_000, "n_test": 10_000},
        architecture={"name": "fcn", "width": 300, "depth": 2},
        training=_sgd(0.1, momentum=0.9, wd=5e-4, eval_every=10_000, select="best_val", train_accuracy=0.995,
                      max_updates=60_000),
        paper={"train_accuracy": 0.995, "test_accuracy": 0.949, "s_randomized_accuracy": 0.497,
               "sc_randomized_accuracy": 0.949, "updates": 40000},
    ),
    "ms7": Experiment(
        title="MS-7, (300,2)-FCN: control — the slabs alone are learnable at this sample size",
        source="notebook 03 (cells 10-11)",
        dataset={"preset": "MS-7", "n_train": 40_000, "n_val": 10_000, "n_test": 10_000},
        architecture={"name": "fcn", "width": 300, "depth": 2},
        training=_sgd(0.3, momentum=0.9, wd=5e-4, eval_every=2000, select="best_val", train_accuracy=0.995,
                      max_updates=60_000, patience_updates=999),
        paper={"train_accuracy": 1.0, "test_accuracy": 1.0, "updates": 8000},
    ),
}


def run_experiment(
    name: str,
    *,
    seed: int = 0,
    n_train: int | None = None,
    eval_every: int | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Generate the data, train, audit; returns the flat summary ``sbaudit reproduce --json`` prints."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r} (choose from: {', '.join(EXPERIMENTS)})")
    exp = EXPERIMENTS[name]
    device = resolve_device(device)
    dataset_request = {**exp.dataset, "seed": seed}
    if n_train is not None:
        dataset_request["n_train"] = n_train
    training = dict(exp.training)
    if eval_every is not None:
        training["eval_every"] = eval_every
    config = TrainConfig.from_dict(training)
    dataset = build_dataset(dataset_request)
    seed_everything(seed)
    model = build_model(exp.architecture, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    started = time.perf_counter()
    result = train(model, dataset, config, seed=seed, device=device, progress=progress)
    train_seconds = time.perf_counter() - started
    audit = run_audit(model, dataset, checks=["randomization"], seed=seed, device=device)
    r = audit["results"]["randomization"]
    return {
        "name": name,
        "title": exp.title,
        "source": exp.source,
        "seed": seed,
        "device": device,
        "n_train": dataset_request["n_train"],
        "updates": result.updates,
        "epochs": result.epochs,
        "stopped_because": result.stopped_because,
        "selected_step": result.selected_step,
        "train_seconds": round(train_seconds, 2),
        "train_accuracy": result.metrics["train_accuracy"],
        "val_accuracy": result.metrics.get("val_accuracy"),
        "test_accuracy": result.metrics["test_accuracy"],
        "auc": r["auc"],
        "s_randomized_auc": r["s_randomized_auc"]["mean"],
        "s_randomized_auc_std": r["s_randomized_auc"]["std"],
        "sc_randomized_auc": r["sc_randomized_auc"]["mean"],
        "sc_randomized_auc_std": r["sc_randomized_auc"]["std"],
        "s_randomized_accuracy": r["s_randomized_accuracy"]["mean"],
        "sc_randomized_accuracy": r["sc_randomized_accuracy"]["mean"],
        "repeats": r["repeats"],
        "verdict": audit["verdict"],
        "paper": exp.paper,
        "config": {"dataset": dataset_request, "architecture": exp.architecture, "training": config.to_dict()},
    }
