"""Universal adversarial perturbations (docs/method.md §8): one vector v that fools a model on most points.

A simplicity-biased model has a single direction that matters, the simple feature S, so a small UAP along
S destroys its accuracy and almost all of v lies on S (paper §4.3: 99.6% on LMS-5). Two ways to find v:

- SVD-UAP: attack every fit point with instance-wise ℓ2 PGD, normalise the rows of the perturbation
  matrix, and take its top right-singular vector (the original decomposed the unnormalised matrix by
  mistake, §12.4, so points with large perturbations dominated).
- AS-UAP (SGD): start from v = 0 and take normalised-gradient (ℓ2) or sign (ℓ∞) steps on the mean
  cross-entropy of the perturbed batch, projecting back onto the budget after each step.

As in the paper, v is applied *label-signed* by default, ``x + s·(2y − 1)·v``: that needs the labels, so it
is data-agnostic but not label-agnostic (§12.4). ``label_signed=False`` applies ``x + s·v`` to every point.
On a balanced binary task whose model decides by a monotone function of S (LMS-5's linear coordinate) a
label-agnostic shift can only push one class across the boundary, since it moves the other class further
from it, so its accuracy stays near 0.5 (the share of the class it cannot hurt) however large v is. A slab
feature is not monotone: a shift by one slab width carries both classes into the other's slabs, so on
MS-(5,7) a label-agnostic UAP can be as strong as a label-signed one.

Unlike the original, v is fitted on one split and evaluated on another (``fit_split`` / ``eval_split``),
and the SVD sign s is chosen on the fit split, never with the evaluation labels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sbengine.attacks import (
    MAX_COORDINATES_FOR_VECTORS,
    NORMS,
    PGDConfig,
    block_names,
    data_bounds,
    mass_shares,
    pgd_perturb,
    relative_to_range,
)
from sbengine.data.dataset import Dataset
from sbengine.device import cpu_threads_for, generator, resolve_device
from sbengine.evaluation import predict_logits
from sbengine.metrics import Canonical
from sbengine.progress import ProgressCallback, report

METHODS = ("sgd", "svd")
_STREAM_SHUFFLE = 40
MAX_EPOCHS = 10_000


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _sign_of_labels(y: torch.Tensor, label_signed: bool) -> torch.Tensor | float:
    if not label_signed:
        return 1.0
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > 1):
        raise ValueError("label-signed UAPs need binary labels in {0, 1}; use label_signed=False")
    return (2 * y - 1).to(torch.float32)


def apply_uap(
    x: torch.Tensor,
    y: torch.Tensor,
    v: torch.Tensor,
    *,
    label_signed: bool,
    sign: float = 1.0,
    bounds: tuple[float, float] | None = None,
) -> torch.Tensor:
    """``clip(x + s·(2y − 1)·v)`` (label-signed, as the paper) or ``clip(x + s·v)`` (label-agnostic)."""
    x = torch.as_tensor(x)
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(x.shape[1:])
    factor = _sign_of_labels(torch.as_tensor(y, device=x.device), label_signed)
    if isinstance(factor, torch.Tensor):
        factor = factor.view(-1, *([1] * (x.dim() - 1)))
    out = x + sign * factor * v
    return out if bounds is None else out.clamp(bounds[0], bounds[1])


def svd_uap(
    model: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    cfg: PGDConfig,
    *,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Unit-ℓ2 direction (input shape, CPU) shared by the instance-wise PGD perturbations of ``x``.

    It is the top right-singular vector of the row-normalised perturbation matrix, so every point votes with
    equal weight. A singular vector's sign is arbitrary: it is fixed so that the largest entry is positive,
    and ``uap_audit`` then picks the better sign on the fit split.
    """
    p = pgd_perturb(model, x, y, cfg, seed=seed, device=device, batch_size=batch_size, progress=progress)
    rows = p.flatten(1).double()
    norms = rows.norm(dim=1, keepdim=True)
    rows = rows[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
    if rows.shape[0] == 0:
        raise ValueError("every PGD perturbation is zero: there is no direction to universalise")
    v = torch.linalg.svd(rows, full_matrices=False).Vh[0]
    v = v * torch.sign(v[v.abs().argmax()])
    report(progress, "svd", 1, 1)
    return v.float().reshape(p.shape[1:])


def _project(v: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    if norm == "linf":
        return v.clamp(-eps, eps)
    return v * (eps / v.norm().clamp_min(eps))


def sgd_uap(
    model: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    norm: str = "l2",
    eps: float,
    step_size: float = 0.05,
    steps: int = 30,
    epochs: int = 2,
    batch_size: int = 256,
    label_signed: bool = True,
    bounds: tuple[float, float] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """AS-UAP (§8, "Algorithm 2" of arXiv 1811.11304 without the clipped loss), fitted on ``(x, y)``.

    v starts at 0; for each of ``epochs`` passes over the data (shuffled by ``seed``) and each batch, take
    ``steps`` steps that ascend the batch's mean cross-entropy under the perturbation, each followed by the
    projection onto ‖v‖ ≤ ``eps``. Returns v (input shape, CPU). The model is used in eval mode.
    """
    _check(norm in NORMS, f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    _check(_positive(eps), f"eps must be a positive number, got {eps!r}")
    _check(_positive(step_size), f"step_size must be a positive number, got {step_size!r}")
    _check(_positive_int(steps), f"steps must be a positive integer, got {steps!r}")
    _check(
        _positive_int(epochs) and epochs <= MAX_EPOCHS,
        f"epochs must be an integer in [1, {MAX_EPOCHS}], got {epochs!r}",
    )
    _check(_positive_int(batch_size), f"batch_size must be a positive integer, got {batch_size!r}")
    device = resolve_device(device)
    x = torch.as_tensor(x, dtype=torch.float32).to(device)
    y = torch.as_tensor(y).long().to(device)
    _sign_of_labels(y, label_signed)  # fail early on non-binary labels
    n = x.shape[0]
    n_batches = math.ceil(n / batch_size)
    total, done = epochs * n_batches * steps, 0
    v = torch.zeros(x.shape[1:], device=device)
    was_training = model.training
    model.to(device).eval()
    try:
        with cpu_threads_for(model, device), torch.enable_grad():
            for epoch in range(epochs):
                order = torch.randperm(n, generator=generator(seed, _STREAM_SHUFFLE, epoch)).to(device)
                for b in range(n_batches):
                    idx = order[b * batch_size : (b + 1) * batch_size]
                    xb, yb = x[idx], y[idx]
                    # apply_uap's rule, with the label signs worked out once per batch (the loop is
                    # overhead-bound)
                    signs = _sign_of_labels(yb, label_signed)
                    if isinstance(signs, torch.Tensor):
                        signs = signs.view(-1, *([1] * (x.dim() - 1)))
                    for _ in range(steps):
                        v.requires_grad_(True)
                        x_adv = xb + signs * v
                        if bounds is not None:
                            x_adv = x_adv.clamp(bounds[0], bounds[1])
                        grad = torch.autograd.grad(-F.cross_entropy(model(x_adv), yb), v)[0]
                        with torch.no_grad():
                            step = grad.sign() if norm == "linf" else grad / (grad.norm() + 1e-12)
                            v = _project(v - step_size * step, norm, eps)
                        done += 1
                        report(progress, "uap", done, total)
    finally:
        model.train(was_training)
    return v.detach().cpu()


def _split(dataset: Dataset, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check(
        name in dataset.splits,
        f"dataset {dataset.name!r} has no {name!r} split (has: {', '.join(dataset.splits)})",
    )
    x, y = dataset.split(name)
    return torch.from_numpy(x), torch.from_numpy(y).long()


def _accuracy_under(model, x, y, v, *, label_signed, sign, bounds, device) -> tuple[torch.Tensor, float]:
    logits = predict_logits(
        model, apply_uap(x, y, v, label_signed=label_signed, sign=sign, bounds=bounds), device=device
    ).cpu()
    return logits, (logits.argmax(1) == y).float().mean().item()


def uap_audit(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    method: str = "sgd",
    norm: str = "l2",
    eps: float,
    label_signed: bool = True,
    fit_split: str = "val",
    eval_split: str = "test",
    pgd: PGDConfig | None = None,
    step_size: float = 0.05,
    steps: int = 30,
    epochs: int = 2,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    simple_blocks: list[int] | None = None,
) -> dict[str, Any]:
    """Fit a UAP on ``fit_split``, evaluate it on ``eval_split``, and report where its budget lies
    (JSON-able).

    Perturbed inputs are clipped to ``data_bounds`` (nb06). ``method="svd"`` attacks the fit split with
    ``pgd`` (default: nb06's LMS-5 setting, ℓ2 PGD with ε = drange, η = 0.05·drange, 30 steps), scales the
    direction to ``eps`` and keeps the sign
    with the lower fit-split accuracy (ties: −1, as the original). Setting ``fit_split == eval_split`` gives
    the original's protocol. For more than two classes the label sign is +1 (§8), i.e. label-agnostic.

    The paper's UAPs are ℓ2. For ``norm="linf"`` the SVD direction becomes ``eps·sign(v₁)``, the point of the
    ℓ∞ ball most aligned with it; like any ℓ∞ attack it spends the full budget on every coordinate where v₁
    is not exactly zero (including the residue of PGD's random start: set ``pgd.rand_eps = 0`` to avoid
    that), so its block shares say less about reliance than the ℓ2 ones.
    """
    _check(method in METHODS, f"method must be one of {', '.join(METHODS)}, got {method!r}")
    _check(norm in NORMS, f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    _check(_positive(eps), f"eps must be a positive number, got {eps!r}")
    _check(isinstance(label_signed, bool), f"label_signed must be a boolean, got {label_signed!r}")
    _check(pgd is None or isinstance(pgd, PGDConfig), "pgd must be a PGDConfig (use PGDConfig.from_dict)")
    simple = list(dataset.simple_blocks if simple_blocks is None else simple_blocks)
    _check(bool(simple), "simple_blocks must name at least one block")
    s_columns = dataset.block_indices(simple)
    device = resolve_device(device)
    signed = label_signed and dataset.num_classes == 2
    x_fit, y_fit = _split(dataset, fit_split)
    x_eval, y_eval = _split(dataset, eval_split)
    bounds = data_bounds(dataset)
    model.to(device).eval()
    out: dict[str, Any] = {
        "method": method,
        "norm": norm,
        "eps": eps,
        "label_signed": signed,
        "fit_split": fit_split,
        "eval_split": eval_split,
        "seed": seed,
        "simple_blocks": simple,
        "bounds": list(bounds),
    }
    with cpu_threads_for(model, device):
        if method == "svd":
            cfg = pgd or PGDConfig(
                norm="l2",
                eps=relative_to_range(dataset, 1.0),
                step_size=relative_to_range(dataset, 0.05),
                steps=30,
                bounds=bounds,
            )
            direction = svd_uap(model, x_fit, y_fit, cfg, seed=seed, device=device, progress=progress)
            v = eps * (direction.sign() if norm == "linf" else direction)
            fit_acc = {
                s: _accuracy_under(
                    model, x_fit, y_fit, v, label_signed=signed, sign=s, bounds=bounds, device=device
                )[1]
                for s in (1.0, -1.0)
            }
            sign = 1.0 if fit_acc[1.0] < fit_acc[-1.0] else -1.0
            v = sign * v
            out["pgd"] = cfg.to_dict()
            out["sign"] = sign
        else:
            v = sgd_uap(
                model,
                x_fit,
                y_fit,
                norm=norm,
                eps=eps,
                step_size=step_size,
                steps=steps,
                epochs=epochs,
                batch_size=batch_size,
                label_signed=signed,
                bounds=bounds,
                seed=seed,
                device=device,
                progress=progress,
            )
            out.update(step_size=step_size, steps=steps, epochs=epochs, batch_size=batch_size)
        clean = predict_logits(model, x_eval, device=device).cpu()
        attacked, acc = _accuracy_under(
            model, x_eval, y_eval, v, label_signed=signed, sign=1.0, bounds=bounds, device=device
        )
        fit_accuracy = _accuracy_under(
            model, x_fit, y_fit, v, label_signed=signed, sign=1.0, bounds=bounds, device=device
        )[1]
    flat = v.flatten()
    shares = mass_shares(v.unsqueeze(0), dataset, [list(b.indices) for b in dataset.blocks] + [s_columns])[0]
    out.update(
        {
            "clean_accuracy": (clean.argmax(1) == y_eval).float().mean().item(),
            "accuracy": acc,
            "loss": F.cross_entropy(attacked, y_eval).item(),
            "fooling_rate": (attacked.argmax(1) != clean.argmax(1)).float().mean().item(),
            "fit_accuracy": fit_accuracy,
            "uap_norm": {"l2": float(flat.norm()), "linf": float(flat.abs().max())},
            "block_share": {name: float(shares[i]) for i, name in enumerate(block_names(dataset))},
            "simple_share": float(shares[-1]),
        }
    )
    if dataset.num_features <= MAX_COORDINATES_FOR_VECTORS:
        out["uap"] = Canonical(dataset, "cpu").to_canonical(v.reshape(1, -1).float())[0].tolist()
    return out
