"""An audit: several checks on one trained model (or ensemble) and one dataset, and a verdict.

The checks are the registry's (``sbengine.checks.CHECKS``: randomization, feature_dependence,
generalization, pgd, uap, ensemble); each check's module says what it measures and which options it takes,
every option with the paper's default. This module only merges the options, runs the requested checks in
the order asked, scales their progress into one bar, and reads the verdict off the randomization metrics
(``sbengine.metrics.verdict``), which it computes without figures when the randomization check was not
requested, with the audit's ``verdict_thresholds`` (``sbengine.metrics.VerdictThresholds``; the ensemble
check's member verdicts use them too) and echoes those in the result. ``audit_figures`` and
``report_sections`` turn a result into what the worker stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sbengine.checks import CHECKS, CheckContext
from sbengine.data.dataset import MASK_KIND, Dataset
from sbengine.device import cpu_threads_for, resolve_device
from sbengine.metrics import VerdictThresholds, randomization, verdict
from sbengine.models.loading import is_differentiable
from sbengine.progress import Progress, ProgressCallback


def check_options(checks: list[str], options: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Each requested check's options: the defaults overridden by ``options``; unknown keys are errors."""
    options = options or {}
    unknown_checks = sorted(set(options) - set(checks))
    if unknown_checks:
        raise ValueError(f"options given for check {unknown_checks[0]!r}, which is not requested")
    merged = {}
    for check in checks:
        defaults = CHECKS[check].defaults() if check in CHECKS else {}
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
    verdict_thresholds: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run ``checks`` and return
    ``{"verdict", "verdict_code", "verdict_thresholds", "results": {check: ...}}`` (JSON-able).
    ``verdict_thresholds`` overrides some or all of VerdictThresholds' defaults."""
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks:
        problem = f"unknown audit check {unknown[0]!r}" if unknown else "an audit needs at least one check"
        raise ValueError(f"{problem} (choose from: {', '.join(CHECKS)})")
    checks = list(dict.fromkeys(checks))
    needs_members = [c for c in checks if CHECKS[c].needs_members]
    if needs_members and not members:
        raise ValueError(
            f"the {needs_members[0]} check needs an ensemble model (ensemble_size > 1 or several model ids)"
        )
    needs_gradients = [c for c in checks if CHECKS[c].needs_gradients]
    if needs_gradients and not is_differentiable(model):
        raise ValueError(
            f"the {', '.join(needs_gradients)} check needs gradients, which this model (run by onnxruntime, "
            "forward only) does not offer"
        )
    simple = dataset.simple_blocks if simple_blocks is None else simple_blocks
    regions = [
        dataset.blocks[b].name
        for b in simple
        if b < len(dataset.blocks) and dataset.blocks[b].kind == MASK_KIND
    ]
    needs_fixed = [c for c in checks if CHECKS[c].needs_fixed_blocks]
    if needs_fixed and regions:
        raise ValueError(
            f"the {', '.join(needs_fixed)} check needs S as fixed coordinates, but S is a per-example region "
            f"({', '.join(regions)})"
        )
    opts = check_options(checks, options)
    thresholds = VerdictThresholds.from_dict(verdict_thresholds)
    dataset.split(split)
    device = resolve_device(device)
    model.to(device).eval()
    with cpu_threads_for(model, device):
        return _run_audit(
            model,
            dataset,
            checks=checks,
            opts=opts,
            simple_blocks=simple_blocks,
            split=split,
            repeats=repeats,
            seed=seed,
            device=device,
            members=members,
            thresholds=thresholds,
            progress=progress,
        )


def _run_audit(
    model,
    dataset,
    *,
    checks,
    opts,
    simple_blocks,
    split,
    repeats,
    seed,
    device,
    members,
    thresholds,
    progress,
) -> dict[str, Any]:
    simple = list(dataset.simple_blocks if simple_blocks is None else simple_blocks)
    results: dict[str, Any] = {}

    def staged(index: int) -> ProgressCallback | None:
        if progress is None:
            return None

        def forward(p: Progress) -> None:
            frac = p.fraction or 0.0
            progress(Progress(stage=p.stage, step=round((index + frac) * 1000), total=len(checks) * 1000))

        return forward

    for i, name in enumerate(checks):
        context = CheckContext(
            model=model,
            dataset=dataset,
            simple_blocks=simple,
            split=split,
            repeats=repeats,
            seed=seed,
            device=device,
            options=opts[name],
            members=members,
            verdict_thresholds=thresholds,
            progress=staged(i),
        )
        results[name] = CHECKS[name].run(context)
    # The verdict is defined on the randomization metrics: reuse them when that check ran.
    rand = results.get("randomization")
    if rand is None:
        rand = randomization(
            model, dataset, simple_blocks=simple, split=split, repeats=repeats, seed=seed, device=device
        )
    v = verdict(rand, dataset, thresholds)
    return {
        "verdict": v["text"],
        "verdict_code": v["code"],
        "verdict_thresholds": thresholds.to_dict(),
        "simple_blocks": simple,
        "seed": seed,
        "split": split,
        "results": results,
    }


def audit_figures(audit: dict[str, Any], dataset: Dataset) -> dict[str, bytes]:
    """Every figure the checks of an audit result draw, by artifact name (``<name>.png``). A check missing
    from the registry (a result stored by another version) or with an empty result draws nothing."""
    out: dict[str, bytes] = {}
    for name, result in audit["results"].items():
        if name in CHECKS and result:
            out.update(CHECKS[name].figures(result, dataset))
    return out


def report_sections(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """The report section of every check of an audit result, in the order the checks ran (JSON; the worker
    stores them so the service renders reports without the engine). Pass the stored, strict-JSON form of
    the result so the sections say what a later reader of the stored results would see."""
    return [
        CHECKS[name].report_section(result) for name, result in audit["results"].items() if name in CHECKS
    ]
