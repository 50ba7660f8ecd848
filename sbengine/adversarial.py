"""What adversarial training adds to the training loop (docs/method.md §7.2), kept out of train.py's way."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from sbengine.data.dataset import Dataset
from sbengine.device import generator
from sbengine.evaluation import accuracy_and_loss, predict_logits


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: torch.nn.Module):
    """BatchNorm keeps normalising with batch statistics but the attack's forward passes do not move the
    running statistics (the original let them, §12.12): momentum 0 makes the running update a no-op."""
    saved = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            saved.append(
                (m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
            )
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class Adversary:
    """Perturbs training batches with PGD and measures robust / randomized accuracy at each evaluation."""

    def __init__(self, settings, dataset: Dataset, *, device: str, seed: int):
        self.train_attack, self.eval_attack = settings.pgd_configs()
        self.mixed_precision = settings.mixed_precision and device.startswith("cuda")
        self.dataset = dataset
        self.device = device
        self.seed = seed
        split = "val" if "val" in dataset.splits else "train"
        x, y = dataset.split(split)
        n = min(settings.eval_examples, y.shape[0])
        keep = torch.randperm(y.shape[0], generator=generator(seed, 30))[:n].numpy()
        self.eval_split = split
        self.eval_x, self.eval_y = torch.from_numpy(x[keep]), torch.from_numpy(y[keep])

    def autocast(self):
        if self.mixed_precision:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def perturb(self, model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int) -> torch.Tensor:
        from sbengine.attacks import pgd

        with frozen_batchnorm_statistics(model), self.autocast():
            delta = pgd(
                model, xb, yb, self.train_attack, seed=int(generator(self.seed, 31, step).initial_seed())
            )
        return (xb + delta).detach()

    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        from sbengine.attacks import pgd_perturb
        from sbengine.metrics import randomization

        delta = pgd_perturb(
            model, self.eval_x, self.eval_y, self.eval_attack, seed=self.seed, device=self.device
        )
        logits = predict_logits(
            model, self.eval_x.to(self.device) + delta.to(self.device), device=self.device
        )
        robust_acc, robust_loss = accuracy_and_loss(logits, self.eval_y.to(self.device))
        rand = randomization(
            model, self.dataset, split=self.eval_split, repeats=1, seed=self.seed, device=self.device
        )
        return {
            "robust_accuracy": robust_acc,
            "robust_loss": robust_loss,
            "s_randomized_accuracy": rand["s_randomized_accuracy"]["mean"],
            "sc_randomized_accuracy": rand["sc_randomized_accuracy"]["mean"],
            "s_randomized_auc": rand["s_randomized_auc"]["mean"],
            "sc_randomized_auc": rand["sc_randomized_auc"]["mean"],
        }
