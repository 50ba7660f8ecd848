"""S/S^c-randomization and feature dependence on LMS-5, the audit's hot path, timed in one fresh process.

An LMS-5 dataset (README preset, 10,000 test points) and a seeded, untrained (100,2)-FCN (the timing does not
depend on the weights); then ``randomization`` (S = block 0, 5 repeats each for S and S^c) and
``feature_dependence`` (random, every block and coordinate), each the best of five. Default threads, as
the engine runs. Prints one JSON line. To compare two trees, run it with each on ``PYTHONPATH`` in turn,
alternating (BENCHMARKS.md):

    .venv/bin/python bench/randomization.py
"""

from __future__ import annotations

import json
import platform
import time

import torch

from sbengine.data import build_dataset
from sbengine.device import seed_everything
from sbengine.metrics import feature_dependence, randomization
from sbengine.models import build_model


def best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    dataset = build_dataset({"preset": "LMS-5", "seed": 0})
    seed_everything(0)
    model = build_model(
        {"name": "fcn", "width": 100, "depth": 2}, input_shape=dataset.input_shape, num_classes=2
    )
    model.eval()
    rand = best_of(5, lambda: randomization(model, dataset, simple_blocks=[0], repeats=5, seed=0))
    dep = best_of(5, lambda: feature_dependence(model, dataset, method="random", seed=0))
    print(
        json.dumps(
            {
                "bench": "randomization",
                "test_points": int(dataset.split("test")[0].shape[0]),
                "randomization_seconds": round(rand, 4),
                "feature_dependence_seconds": round(dep, 4),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
