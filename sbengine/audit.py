"""An audit: several checks on one trained model (or ensemble) and one dataset, and a verdict (docs/api.md).

Checks and their options (every option has the paper's default; ``eps`` and ``step_size`` of PGD are
fractions of the data range when ``relative`` is true, as nb06's "0.5·drange"):

- ``randomization``: S/S^c-randomized AUC, accuracy, logit shift, histograms (repeats, split).
- ``feature_dependence``: random and swap dependence per block (and per coordinate for small inputs).
- ``generalization``: accuracy against the Bayes accuracy of S alone and S^c alone.
- ``pgd``: instance-wise PGD, accuracy under attack and the share of the perturbation on each block.
- ``uap``: a universal adversarial perturbation fitted on ``fit_split`` and evaluated on ``split``.
- ``ensemble``: every member's reliance next to the ensemble's (needs ``members``).
"""

from __future__ import annotations

from typing import Any

import torch

from sbengine.boundary import decision_slice
from sbengine.data.dataset import Dataset
from sbengine.device import cpu_threads_for, resolve_device
from sbengine.metrics import feature_dependence, randomization, verdict
from sbengine.progress import Progress, ProgressCallback

AUDIT_CHECKS = ("randomization", "feature_dependence", "generalization", "pgd", "uap", "ensemble")

DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "pgd": {"norm": "l2", "eps": 0.5, "step_size": 0.05, "steps": 20, "relative": True, "restarts": 1,
            "loss": "untargeted", "rand_eps": 0.0},
    "uap": {"method": "sgd", "norm": "l2", "eps": 1.0, "label_signed": True, "step_size": 0.05, "steps": 30,
            "epochs": 2, "fit_split": "val"},
    "feature_dependence": {"methods": ["random", "swap"], "sample_fraction": 1.0},
}


def check_options(checks: list[str], options: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Each requested check's options: the defaults overridden by ``options``; unknown keys are errors."""
    options = options or {}
    unknown_checks = sorted(set(options) - set(checks))
    if unknown_checks:
        raise ValueError(f"options given for check {unknown_checks[0]!r}, which is not requested")
    merged = {}
    for check in checks:
        defaults = DEFAULT_OPTIONS.get(check, {})
        given = options.get(check, {})
        if not isinstance(given, dict):
            raise ValueError(f"options.{check} must be an object")
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            allowed = ", ".join(sorted(defaults)) or "none"
            raise ValueError(f"options.{check}: unknown option {unknown[0]!r} (allowed: {allowed})")
        merged[check] = {**defaults, **given}
    return merged


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
    options: dict[str, dict[str, Any]] | None = None,
    members: list[torch.nn.Module] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run ``checks`` and return ``{"verdict", "verdict_code", "results": {check: ...}}`` (JSON-able)."""
    unknown = [c for c in checks if c not in AUDIT_CHECKS]
    if unknown or not checks:
        problem = f"unknown audit check {unknown[0]!r}" if unknown else "an audit needs at least one check"
        raise ValueError(f"{problem} (choose from: {', '.join(AUDIT_CHECKS)})")
    checks = list(dict.fromkeys(checks))
    if "ensemble" in checks and not members:
        raise ValueError("the ensemble check needs an ensemble model (ensemble_size > 1 or several model ids)")
    opts = check_options(checks, options)
    dataset.split(split)
    device = resolve_device(device)
    model.to(device).eval()
    with cpu_threads_for(model, device):
        return _run_audit(model, dataset, checks=checks, opts=opts, simple_blocks=simple_blocks, split=split,
                          repeats=repeats, seed=seed, device=device, members=members, progress=progress)


def _run_audit(model, dataset, *, checks, opts, simple_blocks, split, repeats, seed, device, members,
               progress) -> dict[str, Any]:
    simple = list(dataset.simple_blocks if simple_blocks is None else simple_blocks)
    common = {"seed": seed, "device": device}
    results: dict[str, Any] = {}

    def staged(index: int) -> ProgressCallback | None:
        if progress is None:
            return None

        def forward(p: Progress) -> None:
            frac = p.fraction or 0.0
            progress(Progress(stage=p.stage, step=round((index + frac) * 1000), total=len(checks) * 1000))

        return forward

    for i, check in enumerate(checks):
        o, cb = opts[check], staged(i)
        if check == "randomization":
            results[check] = randomization(model, dataset, simple_blocks=simple, split=split, repeats=repeats,
                                           progress=cb, **common)
            boundary = decision_slice(model, dataset, simple_blocks=simple, split=split, **common)
            if boundary is not None:
                results[check]["boundary"] = boundary
        elif check == "feature_dependence":
            results[check] = {
                method: feature_dependence(model, dataset, method=method, split=split, progress=cb,
                                           sample_fraction=o["sample_fraction"], **common)
                for method in o["methods"]
            }
        elif check == "generalization":
            from sbengine.generalization import generalization_check

            results[check] = generalization_check(model, dataset, simple_blocks=simple, split=split, device=device)
        elif check == "pgd":
            from sbengine.attacks import pgd_audit

            results[check] = pgd_audit(model, dataset, _pgd_config(dataset, o), split=split,
                                       simple_blocks=simple, progress=cb, **common)
        elif check == "uap":
            from sbengine.uap import uap_audit

            o = dict(o)
            results[check] = uap_audit(model, dataset, method=o.pop("method"), norm=o.pop("norm"), eps=o.pop("eps"),
                                       label_signed=o.pop("label_signed"), fit_split=o.pop("fit_split"),
                                       eval_split=split, simple_blocks=simple, progress=cb, **o, **common)
        elif check == "ensemble":
            from sbengine.ensemble import ensemble_audit_summary

            results[check] = ensemble_audit_summary(model, members, dataset, simple_blocks=simple, repeats=repeats,
                                                    **common)
    rand = results.get("randomization")
    if rand is None:
        rand = randomization(model, dataset, simple_blocks=simple, split=split, repeats=repeats, **common)
    v = verdict(rand, dataset)
    return {"verdict": v["text"], "verdict_code": v["code"], "simple_blocks": simple, "seed": seed,
            "split": split, "results": results}


def _pgd_config(dataset: Dataset, o: dict[str, Any]):
    from sbengine.attacks import PGDConfig, data_bounds, relative_to_range

    o = dict(o)
    relative = o.pop("relative")
    if not isinstance(relative, bool):
        raise ValueError("options.pgd.relative must be true or false")
    scale = relative_to_range(dataset, 1.0) if relative else 1.0
    if not all(isinstance(o[k], int | float) and not isinstance(o[k], bool) for k in ("eps", "step_size")):
        raise ValueError("options.pgd.eps and options.pgd.step_size must be numbers")
    bounds = data_bounds(dataset) if dataset.rotation is None and dataset.spec.get("kind") != "synthetic" else None
    return PGDConfig.from_dict({**o, "eps": o["eps"] * scale, "step_size": o["step_size"] * scale, "bounds": bounds})
