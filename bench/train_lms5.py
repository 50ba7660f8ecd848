"""sbengine's training loop against the paper's way (TensorDataset + shuffled DataLoader) on LMS-5.

Same data, same (100,2)-FCN initialisation, same SGD settings, same number of updates, in one process.
The two loops alternate for ``--rounds`` rounds and the medians are compared, so the ratio holds on a noisy
shared machine. sbengine's time includes its two full evaluations (start and end), the baseline's does not:
the ratio is conservative. Prints one JSON line.

    .venv/bin/python bench/train_lms5.py [--updates 3000] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from sbengine.data import build_dataset
from sbengine.device import cpu_threads_for, resolve_device, seed_everything
from sbengine.evaluation import evaluate
from sbengine.models import build_model
from sbengine.train import StopRule, TrainConfig, train

ARCH = {"name": "fcn", "width": 100, "depth": 2}


def dataloader_loop(model, ds, cfg: TrainConfig, updates: int, device: str) -> float:
    x, y = ds.split("train")
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=cfg.batch_size,
        shuffle=True,
        pin_memory=device != "cpu",
    )
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    started = time.perf_counter()
    step = 0
    while step < updates:
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1
            if step == updates:
                break
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    ds = build_dataset({"preset": "LMS-5", "seed": args.seed})
    cfg = TrainConfig(
        lr=0.1, weight_decay=5e-5, batch_size=256, eval_every=10**9, stop=StopRule(max_updates=args.updates)
    )

    ours_times, base_times = [], []
    for _ in range(args.rounds):
        seed_everything(args.seed)
        ours = build_model(ARCH, input_shape=ds.input_shape, num_classes=2)
        seed_everything(args.seed)
        baseline = build_model(ARCH, input_shape=ds.input_shape, num_classes=2).to(device)
        started = time.perf_counter()
        result = train(ours, ds, cfg, seed=args.seed, device=device)
        ours_times.append(time.perf_counter() - started)
        with cpu_threads_for(baseline, device):  # same threading for both: the ratio measures the loop alone
            base_times.append(dataloader_loop(baseline, ds, cfg, args.updates, device))
    ours_seconds, base_seconds = statistics.median(ours_times), statistics.median(base_times)
    base_test = evaluate(baseline, *ds.split("test"), device=device)[0]

    print(
        json.dumps(
            {
                "bench": "train_lms5",
                "device": device,
                "updates": args.updates,
                "sbengine_ms_per_update": round(1000 * ours_seconds / args.updates, 4),
                "dataloader_ms_per_update": round(1000 * base_seconds / args.updates, 4),
                "speedup": round(base_seconds / ours_seconds, 2),
                "speedup_per_round": [round(b / o, 2) for o, b in zip(ours_times, base_times, strict=True)],
                "rounds": args.rounds,
                "sbengine_test_accuracy": result.metrics["test_accuracy"],
                "dataloader_test_accuracy": base_test,
                "torch": torch.__version__,
                "threads": 1 if device == "cpu" else None,
                "machine": f"{platform.machine()} {torch.get_num_threads()} threads available",
            }
        )
    )


if __name__ == "__main__":
    main()
