"""Ten (100,2)-FCN members on LMS-5 (100k train): one vectorized pass vs. one after another.

Same members (same seeds), same TrainConfig (SGD lr 0.1, wd 5e-5, batch 256, a fixed number of updates,
evaluation only at the start and the end), same process. After a short warm-up the two modes alternate for
``--repeats`` rounds and the medians are compared, so a burst of load from another process on a shared
machine hits both. Both go through ``train_ensemble``, evaluations and final metrics included ("speedup");
"loop_speedup" compares the training loops alone (each member's step-0 evaluation to its last update, timed
through progress events), because evaluating the 100k-row train split at the start and at the end is the
same arithmetic-bound work in both modes. Prints one JSON line, with the largest absolute weight difference
between the two ensembles (they must agree).

    .venv/bin/python bench/ensemble.py [--members 10] [--updates 1000] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from sbengine.data import build_dataset
from sbengine.device import resolve_device
from sbengine.ensemble import train_ensemble
from sbengine.progress import Progress
from sbengine.train import StopRule, TrainConfig

ARCH = {"name": "fcn", "width": 100, "depth": 2}


class LoopClock:
    """Progress callback that adds up, per member, the wall time from the report after its step-0 evaluation
    to the report at its last update (before its final evaluation): the training loop alone."""

    def __init__(self, updates: int):
        self.updates, self.started, self.seconds = updates, None, 0.0

    def __call__(self, p: Progress) -> None:
        local = (
            p.step - p.metrics.get("member", 0) * self.updates
        )  # one-by-one runs report ensemble-wide steps
        if local == 0 and self.started is None:
            self.started = time.perf_counter()
        elif local == self.updates and self.started is not None:
            self.seconds += time.perf_counter() - self.started
            self.started = None


def timed(ds, cfg: TrainConfig, members: int, seed: int, device: str, vectorize: str):
    clock = LoopClock(cfg.stop.max_updates)
    started = time.perf_counter()
    models, results = train_ensemble(
        ARCH, ds, cfg, size=members, seed=seed, device=device, vectorize=vectorize, progress=clock
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started, clock.seconds, models, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    ds = build_dataset({"preset": "LMS-5", "seed": args.seed})

    def config(updates: int) -> TrainConfig:
        return TrainConfig(
            lr=0.1, weight_decay=5e-5, batch_size=256, eval_every=10**9, stop=StopRule(max_updates=updates)
        )

    for vectorize in ("always", "never"):  # warm-up: allocator, kernels, lazy imports
        timed(ds, config(20), 2, args.seed, device, vectorize)
    cfg = config(args.updates)
    runs: dict[str, list[tuple[float, float]]] = {"always": [], "never": []}
    for _ in range(args.repeats):  # alternate, so a burst of load from another process hits both modes
        for vectorize in runs:
            seconds, loop, models, results = timed(ds, cfg, args.members, args.seed, device, vectorize)
            runs[vectorize].append((seconds, loop))
            if vectorize == "always":
                vec_models, vec_results = models, results
            else:
                seq_models, seq_results = models, results
    max_diff = max(
        (a - b).abs().max().item()
        for ma, mb in zip(vec_models, seq_models, strict=True)
        for a, b in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True)
    )
    vec_seconds, vec_loop = (statistics.median(r[i] for r in runs["always"]) for i in (0, 1))
    seq_seconds, seq_loop = (statistics.median(r[i] for r in runs["never"]) for i in (0, 1))
    member_updates = args.members * args.updates
    print(
        json.dumps(
            {
                "bench": "ensemble",
                "device": device,
                "members": args.members,
                "updates_per_member": args.updates,
                "repeats": args.repeats,
                "vectorized_seconds": round(vec_seconds, 3),
                "sequential_seconds": round(seq_seconds, 3),
                "vectorized_ms_per_member_update": round(1000 * vec_seconds / member_updates, 4),
                "sequential_ms_per_member_update": round(1000 * seq_seconds / member_updates, 4),
                "speedup": round(seq_seconds / vec_seconds, 2),
                "loop_vectorized_seconds": round(vec_loop, 3),
                "loop_sequential_seconds": round(seq_loop, 3),
                "loop_speedup": round(seq_loop / vec_loop, 2),
                "speedup_per_repeat": [
                    round(s[0] / v[0], 2) for v, s in zip(runs["always"], runs["never"], strict=True)
                ],
                "max_abs_weight_diff": max_diff,
                "same_test_accuracy": [r.metrics["test_accuracy"] for r in vec_results]
                == [r.metrics["test_accuracy"] for r in seq_results],
                "mean_test_accuracy": round(
                    sum(r.metrics["test_accuracy"] for r in vec_results) / args.members, 4
                ),
                "torch": torch.__version__,
                "machine": f"{platform.machine()} {torch.get_num_threads()} threads available",
            }
        )
    )


if __name__ == "__main__":
    main()
