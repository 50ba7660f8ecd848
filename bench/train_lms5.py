"""sbengine's training loop against the paper's way (TensorDataset + shuffled DataLoader) on LMS-5.

Same data, same (100,2)-FCN initialisation, same SGD settings, same number of updates and the same
evaluations (full train and validation splits at the start and at the end), in one process, one after the
other, so the ratio is meaningful on a noisy shared machine. Prints one JSON line.

    .venv/bin/python bench/train_lms5.py [--updates 3000] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
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
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=cfg.batch_size,
                        shuffle=True, pin_memory=device != "cpu")
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    started = time.perf_counter()
    evaluate(model, x, y, device=device)
    evaluate(model, *ds.split("val"), device=device)
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
    evaluate(model, x, y, device=device)
    evaluate(model, *ds.split("val"), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    ds = build_dataset({"preset": "LMS-5", "seed": args.seed})
    cfg = TrainConfig(lr=0.1, weight_decay=5e-5, batch_size=256, eval_every=10**9,
                      stop=StopRule(max_updates=args.updates))

    seed_everything(args.seed)
    ours = build_model(ARCH, input_shape=ds.input_shape, num_classes=2)
    seed_everything(args.seed)
    baseline = build_model(ARCH, input_shape=ds.input_shape, num_classes=2).to(device)

    started = time.perf_counter()
    result = train(ours, ds, cfg, seed=args.seed, device=device)
    ours_seconds = time.perf_counter() - started
    with cpu_threads_for(baseline, device):  # same threading for both: the ratio measures the loop alone
        base_seconds = dataloader_loop(baseline, ds, cfg, args.updates, device)
    base_test = evaluate(baseline, *ds.split("test"), device=device)[0]

    print(json.dumps({
        "bench": "train_lms5",
        "device": device,
        "updates": args.updates,
        "sbengine_ms_per_update": round(1000 * ours_seconds / args.updates, 4),
        "dataloader_ms_per_update": round(1000 * base_seconds / args.updates, 4),
        "speedup": round(base_seconds / ours_seconds, 2),
        "sbengine_test_accuracy": result.metrics["test_accuracy"],
        "dataloader_test_accuracy": base_test,
        "torch": torch.__version__,
        "threads": 1 if device == "cpu" else None,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads available",
    }))


if __name__ == "__main__":
    main()
