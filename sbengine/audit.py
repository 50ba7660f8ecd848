"""An audit: several checks on one trained model and one dataset, and a verdict (DESIGN §3)."""

from __future__ import annotations

from typing import Any

import torch

from sbengine.data.dataset import Dataset
from sbengine.device import cpu_threads_for, resolve_device
from sbengine.metrics import feature_dependence, randomization, verdict
from sbengine.progress import Progress, ProgressCallback

AUDIT_CHECKS = ("randomization", "feature_dependence")


def run_audit(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    checks: list[str],
    simple_blocks: list[int] | None = None,
    split: str = "test",
    repeats: int = 5,
    seed: int = 0,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run ``checks`` and return ``{"verdict", "verdict_code", "results": {check: ...}}`` (JSON-able)."""
    unknown = [c for c in checks if c not in AUDIT_CHECKS]
    if unknown or not checks:
        problem = f"unknown audit check {unknown[0]!r}" if unknown else "an audit needs at least one check"
        raise ValueError(f"{problem} (choose from: {', '.join(AUDIT_CHECKS)})")
    device = resolve_device(device)
    model.to(device).eval()
    with cpu_threads_for(model, device):
        return _run_audit(model, dataset, checks=list(dict.fromkeys(checks)), simple_blocks=simple_blocks,
                          split=split, repeats=repeats, seed=seed, device=device, progress=progress)


def _run_audit(model, dataset, *, checks, simple_blocks, split, repeats, seed, device, progress) -> dict[str, Any]:
    simple = list(dataset.simple_blocks if simple_blocks is None else simple_blocks)
    results: dict[str, Any] = {}

    def staged(index: int) -> ProgressCallback | None:
        if progress is None:
            return None

        def forward(p: Progress) -> None:
            frac = p.fraction or 0.0
            progress(Progress(stage=p.stage, step=round((index + frac) * 1000), total=len(checks) * 1000))

        return forward

    rand = None
    for i, check in enumerate(checks):
        if check == "randomization":
            rand = randomization(model, dataset, simple_blocks=simple, split=split, repeats=repeats, seed=seed,
                                 device=device, progress=staged(i))
            results["randomization"] = rand
        elif check == "feature_dependence":
            results["feature_dependence"] = {
                method: feature_dependence(model, dataset, method=method, split=split, seed=seed, device=device,
                                           progress=staged(i))
                for method in ("random", "swap")
            }
    if rand is None:
        rand = randomization(model, dataset, simple_blocks=simple, split=split, repeats=repeats, seed=seed,
                             device=device)
    v = verdict(rand, dataset)
    return {"verdict": v["text"], "verdict_code": v["code"], "simple_blocks": simple, "seed": seed,
            "split": split, "results": results}
