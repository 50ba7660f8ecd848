"""Projected gradient descent attacks (docs/method.md §7.1) and where their budget goes (§8, nb06).

The audit question is not only "does the attack flip the prediction" but "which feature does it move": if
a model relies exclusively on the simple block S, the cheapest adversarial direction lies in S, so the
share of each perturbation on S (in canonical coordinates, ``|P_S| / ‖P‖``) measures simplicity bias
from the attacker's side.

The attack follows §7.1 step for step (random start of size ``rand_eps``, normalised-gradient ℓ2 or sign ℓ∞
steps, projection onto the ε-ball, then the box clip; restarts keep each example's worst perturbation).
One deliberate difference: the objective is summed over the batch rather than averaged. Every step is
normalised per example, so the two agree except through the ``1e-10`` guard, and summing keeps a
perturbation independent of how the split was cut into batches.

It is over 400 lines because the PGD variants (norms, losses, restarts, random starts, bounds) share one
step loop and one projection; split, each file would repeat that loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sbengine.data.dataset import Dataset
from sbengine.device import cpu_threads_for, generator, resolve_device
from sbengine.evaluation import eval_batch_size, predict_logits
from sbengine.metrics import Canonical
from sbengine.progress import ProgressCallback, report

NORMS = ("l2", "linf")
LOSSES = ("untargeted", "targeted", "random_targeted", "plusone_targeted", "binary_targeted", "binary_hybrid")
_BINARY_LOSSES = ("binary_targeted", "binary_hybrid")
MAX_STEPS = 100_000
MAX_RESTARTS = 100
HEATMAP_ROWS = 20
# Per-coordinate outputs (heatmaps, the UAP vector) are returned when the input has at most this many
# coordinates, the limit the metrics use for per-coordinate dependence.
MAX_COORDINATES_FOR_VECTORS = 512
# Minimal mode stops once fewer than this share of the batch is still classified as before (§7.1).
_MINIMAL_STOP = 1e-5
_GRAD_GUARD = 1e-10
# Random streams (sbengine.device.generator): random starts, random targets.
_STREAM_START, _STREAM_TARGET = 30, 31


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(kw_only=True)
class PGDConfig:
    """One PGD attack (docs/method.md §7.1). ``eps`` and ``step_size`` are absolute, in input units: use
    ``relative_to_range`` for nb06's "0.5·drange". ``bounds`` is the box every perturbed input is clipped
    to (``None``: no box). With ``minimal`` there is no ε-projection and examples stop moving once flipped.
    """

    norm: str = "l2"
    eps: float
    step_size: float
    steps: int = 20
    loss: str = "untargeted"
    rand_eps: float = 1e-3
    restarts: int = 1
    bounds: tuple[float, float] | None = None
    minimal: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.bounds, list):
            self.bounds = tuple(self.bounds)
        self.validate()

    def validate(self) -> None:
        checks = [
            (self.norm in NORMS, "norm", f"one of {', '.join(NORMS)}", self.norm),
            (_is_number(self.eps) and self.eps > 0, "eps", "a positive number", self.eps),
            (
                _is_number(self.step_size) and self.step_size > 0,
                "step_size",
                "a positive number",
                self.step_size,
            ),
            (
                _is_int(self.steps) and 1 <= self.steps <= MAX_STEPS,
                "steps",
                f"an integer in [1, {MAX_STEPS}]",
                self.steps,
            ),
            (self.loss in LOSSES, "loss", f"one of {', '.join(LOSSES)}", self.loss),
            (
                _is_number(self.rand_eps) and self.rand_eps >= 0,
                "rand_eps",
                "a non-negative number",
                self.rand_eps,
            ),
            (
                _is_int(self.restarts) and 1 <= self.restarts <= MAX_RESTARTS,
                "restarts",
                f"an integer in [1, {MAX_RESTARTS}]",
                self.restarts,
            ),
            (
                self.bounds is None
                or (
                    isinstance(self.bounds, tuple)
                    and len(self.bounds) == 2
                    and all(_is_number(b) for b in self.bounds)
                    and self.bounds[0] < self.bounds[1]
                ),
                "bounds",
                "null or [low, high] with low < high",
                self.bounds,
            ),
            (isinstance(self.minimal, bool), "minimal", "a boolean", self.minimal),
        ]
        for ok, name, wanted, value in checks:
            if not ok:
                raise ValueError(f"pgd.{name} must be {wanted}, got {value!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PGDConfig:
        if not isinstance(d, dict):
            raise ValueError(f"pgd config must be an object, got {type(d).__name__}")
        allowed = sorted(cls.__dataclass_fields__)
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ValueError(f"pgd: unknown option {unknown[0]!r} (allowed: {', '.join(allowed)})")
        missing = [k for k in ("eps", "step_size") if k not in d]
        if missing:
            raise ValueError(f"pgd.{missing[0]} is required")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bounds"] = None if self.bounds is None else [float(b) for b in self.bounds]
        return d


def data_bounds(dataset: Dataset) -> tuple[float, float]:
    """Scalar (min, max) over every entry of every split's inputs.

    nb06 clips perturbed points to the range of the (rotated) data matrix, train and test together, rather
    than to a per-coordinate box: a rotated point has no natural per-coordinate limits, and a scalar range
    keeps the attack from leaving the region the data occupies. For MNIST-CIFAR this is (0, 1).
    """
    lows = [float(x.min()) for x, _ in dataset.splits.values() if x.size]
    highs = [float(x.max()) for x, _ in dataset.splits.values() if x.size]
    if not lows:
        raise ValueError(f"dataset {dataset.name!r} has no data to take bounds from")
    return min(lows), max(highs)


def relative_to_range(dataset: Dataset, fraction: float) -> float:
    """``fraction · (max − min)`` of ``data_bounds``: nb06 states its budgets as "0.5·drange"."""
    lo, hi = data_bounds(dataset)
    return float(fraction) * (hi - lo)


def _targets(
    y: torch.Tensor, num_classes: int, cfg: PGDConfig, target: torch.Tensor | None, gen: torch.Generator
) -> torch.Tensor | None:
    """The label each targeted loss pulls toward; ``None`` for the untargeted loss."""
    if cfg.loss == "untargeted":
        return None
    if cfg.loss == "targeted":
        if target is None:
            raise ValueError("pgd.loss 'targeted' needs target labels")
        target = torch.as_tensor(target, device=y.device).long()
        if target.shape != y.shape:
            raise ValueError(f"target labels must have shape {tuple(y.shape)}, got {tuple(target.shape)}")
        return target
    if cfg.loss in _BINARY_LOSSES:
        if num_classes != 2:
            raise ValueError(
                f"pgd.loss {cfg.loss!r} needs a binary model, this one has {num_classes} outputs"
            )
        return 1 - y
    if cfg.loss == "plusone_targeted":
        return (y + 1) % num_classes
    # random_targeted: a uniformly drawn class other than the true one (with one class there is none)
    shift = torch.randint(1, max(num_classes, 2), (y.shape[0],), generator=gen).to(y.device)
    return (y + shift) % num_classes


def _objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """The quantity PGD *descends* (§7.1), summed over the batch."""
    if loss == "untargeted":
        return -F.cross_entropy(logits, y, reduction="sum")
    if loss == "binary_hybrid":
        return (
            F.cross_entropy(logits, target, reduction="none") - F.cross_entropy(logits, y, reduction="none")
        ).sum()
    return F.cross_entropy(logits, target, reduction="sum")


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _random_start(x: torch.Tensor, cfg: PGDConfig, gen: torch.Generator) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device) * 2 - 1
    if cfg.norm == "linf":
        return noise * cfg.rand_eps
    return noise * cfg.rand_eps / _per_example_norm(noise).clamp_min(1e-12)


def _box(delta: torch.Tensor, x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    if bounds is None:
        return delta
    return torch.maximum(torch.minimum(delta, bounds[1] - x), bounds[0] - x)


def _still_unflipped(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Examples a minimal attack keeps moving: untargeted ones still on ``y``, targeted ones not yet on
    target."""
    pred = logits.argmax(1)
    return pred == y if target is None else pred != target


def _attack_batch(
    model,
    x,
    y,
    cfg: PGDConfig,
    *,
    target,
    seed: int,
    stream: int,
    progress: ProgressCallback | None = None,
    progress_offset: int = 0,
    progress_total: int | None = None,
) -> torch.Tensor:
    tgt: torch.Tensor | None = None  # fixed at the first forward pass, where the number of classes shows
    best = torch.zeros_like(x)
    best_ce = torch.full((x.shape[0],), -math.inf, device=x.device)
    done = progress_offset
    for r in range(cfg.restarts):
        delta = _box(_random_start(x, cfg, generator(seed, _STREAM_START, stream, r)), x, cfg.bounds)
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(cfg.steps):
            delta.requires_grad_(True)
            logits = model(x + delta)
            if tgt is None and cfg.loss != "untargeted":
                tgt = _targets(y, logits.shape[1], cfg, target, generator(seed, _STREAM_TARGET, stream))
            grad = torch.autograd.grad(_objective(logits, y, tgt, cfg.loss), delta)[0]
            delta = delta.detach()
            if cfg.minimal:
                active = _still_unflipped(logits.detach(), y, tgt)
                if active.float().mean().item() < _MINIMAL_STOP:
                    break
            if cfg.norm == "linf":
                step = cfg.step_size * grad.sign()
            else:
                step = cfg.step_size * grad / (_per_example_norm(grad) + _GRAD_GUARD)
            if cfg.minimal:
                step = step * active.view(-1, *([1] * (x.dim() - 1)))
            delta = delta - step
            if not cfg.minimal:
                if cfg.norm == "linf":
                    delta = delta.clamp(-cfg.eps, cfg.eps)
                else:
                    delta = delta * (cfg.eps / _per_example_norm(delta).clamp_min(cfg.eps))
            delta = _box(delta, x, cfg.bounds)
            done += 1
            report(progress, "pgd", done, progress_total)
        if cfg.restarts == 1:
            return delta
        with torch.no_grad():
            ce = F.cross_entropy(model(x + delta), y, reduction="none")
        keep = ce >= best_ce  # ties go to the later restart
        best[keep] = delta[keep]
        best_ce = torch.where(keep, ce, best_ce)
    return best.detach()


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: PGDConfig,
    *,
    target: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """The perturbation δ of one batch under attack ``cfg``, exactly §7.1, on ``x``'s device.

    The model's train/eval mode is left as the caller set it (the adversarial-training loop attacks in
    train mode). ``target`` is needed only for ``loss="targeted"``. Random starts and random targets come
    from ``seed``, so the same call returns the same δ.
    """
    with torch.enable_grad():
        return _attack_batch(
            model, x, torch.as_tensor(y, device=x.device).long(), cfg, target=target, seed=seed, stream=0
        )


def pgd_perturb(
    model: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    cfg: PGDConfig,
    *,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int | None = None,
    target: np.ndarray | torch.Tensor | None = None,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Perturbations of a whole split, attacked batch by batch in eval mode; returned on the CPU.

    Batch ``b`` uses random stream ``(seed, b)``, so the first batch equals ``pgd(..., seed=seed)`` on it.
    """
    device = resolve_device(device)
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y).long()
    target = None if target is None else torch.as_tensor(target).long()
    bs = batch_size or eval_batch_size(model, x)
    if not _is_int(bs) or bs < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n_batches = math.ceil(x.shape[0] / bs)
    total = n_batches * cfg.restarts * cfg.steps
    was_training = model.training
    model.to(device).eval()
    out = []
    try:
        with cpu_threads_for(model, device), torch.enable_grad():
            for b in range(n_batches):
                sl = slice(b * bs, (b + 1) * bs)
                xb, yb = x[sl].to(device), y[sl].to(device)
                tb = None if target is None else target[sl].to(device)
                delta = _attack_batch(
                    model,
                    xb,
                    yb,
                    cfg,
                    target=tb,
                    seed=seed,
                    stream=b,
                    progress=progress,
                    progress_offset=b * cfg.restarts * cfg.steps,
                    progress_total=total,
                )
                out.append(delta.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros_like(x)


def block_names(dataset: Dataset) -> list[str]:
    """Block names as result keys; a repeated name gets its block index appended."""
    names = [b.name for b in dataset.blocks]
    return [n if names.count(n) == 1 else f"{n} (block {i})" for i, n in enumerate(names)]


def mass_shares(delta: torch.Tensor | np.ndarray, dataset: Dataset, groups: list[list[int]]) -> torch.Tensor:
    """Per example and group of canonical coordinates: ``‖P_can[group]‖₂ / ‖P_can‖₂`` (rows: examples).

    Examples whose perturbation is exactly zero have no direction; their shares are NaN.
    """
    z = Canonical(dataset, "cpu").to_canonical(torch.as_tensor(delta).cpu().float()).double()
    total = z.norm(dim=1)
    parts = torch.stack([z[:, torch.as_tensor(g, dtype=torch.long)].norm(dim=1) for g in groups], dim=1)
    return parts / total.unsqueeze(1).where(total.unsqueeze(1) > 0, torch.tensor(float("nan"), dtype=z.dtype))


def _mean_std(values: torch.Tensor) -> dict[str, float]:
    v = values[~torch.isnan(values)]
    if v.numel() == 0:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(v.mean()), "std": float(v.std(correction=0))}


def block_shares(delta: torch.Tensor | np.ndarray, dataset: Dataset) -> dict[str, Any]:
    """For every block: mean and std over examples of the share of the perturbation on it,
    ``‖P_can[block]‖₂ / ‖P_can‖₂``. Blocks partition the coordinates, so per example the squared shares sum
    to 1; examples with a zero perturbation are left out."""
    shares = mass_shares(delta, dataset, [list(b.indices) for b in dataset.blocks])
    return {name: _mean_std(shares[:, i]) for i, name in enumerate(block_names(dataset))}


def canonical_heatmap(delta: torch.Tensor, dataset: Dataset, rows: int = HEATMAP_ROWS) -> list[list[float]]:
    """The first ``rows`` perturbations in canonical coordinates, each divided by its max-abs entry (nb06)."""
    z = Canonical(dataset, "cpu").to_canonical(delta[:rows].cpu().float())
    scale = z.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    return (z / scale).tolist()


def pgd_audit(
    model: torch.nn.Module,
    dataset: Dataset,
    cfg: PGDConfig,
    *,
    split: str = "test",
    seed: int = 0,
    device: str = "cpu",
    simple_blocks: list[int] | None = None,
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Attack every point of ``split`` and report accuracy under attack and where the budget went (JSON-able).

    The model is left in eval mode.
    """
    device = resolve_device(device)
    simple = list(dataset.simple_blocks if simple_blocks is None else simple_blocks)
    if not simple:
        raise ValueError("simple_blocks must name at least one block")
    s_columns = dataset.block_indices(simple)
    if split not in dataset.splits:
        raise ValueError(
            f"dataset {dataset.name!r} has no {split!r} split (has: {', '.join(dataset.splits)})"
        )
    x_np, y_np = dataset.split(split)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np).long()
    model.to(device).eval()
    with cpu_threads_for(model, device):
        clean = predict_logits(model, x, device=device).cpu()
        delta = pgd_perturb(
            model, x, y, cfg, seed=seed, device=device, batch_size=batch_size, progress=progress
        )
        attacked = predict_logits(model, x + delta, device=device).cpu()
    s_share = mass_shares(delta, dataset, [s_columns])[:, 0]
    norms = delta.flatten(1).norm(dim=1)
    out: dict[str, Any] = {
        "config": cfg.to_dict(),
        "split": split,
        "n": int(y.shape[0]),
        "seed": seed,
        "simple_blocks": simple,
        "clean_accuracy": (clean.argmax(1) == y).float().mean().item(),
        "accuracy": (attacked.argmax(1) == y).float().mean().item(),
        "loss": F.cross_entropy(attacked, y).item(),
        "mean_l2_norm": float(norms.mean()) if norms.numel() else 0.0,
        "mean_linf_norm": float(delta.flatten(1).abs().amax(dim=1).mean()) if norms.numel() else 0.0,
        "block_share": block_shares(delta, dataset),
        "simple_share": _mean_std(s_share)["mean"],
        "simple_share_std": _mean_std(s_share)["std"],
    }
    if dataset.num_features <= MAX_COORDINATES_FOR_VECTORS:
        out["heatmap"] = canonical_heatmap(delta, dataset)
    return out
