"""Batched inference on whole splits: logits, accuracy, loss (shared by training and the metrics)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def as_tensor(x: np.ndarray | torch.Tensor, device: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.to(device)


def eval_batch_size(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Large batches for vectors (inference is overhead-bound; beyond ~2k rows the activations leave the CPU
    cache and it gets slower again), modest ones for images."""
    return 2048 if x[0].numel() <= 4096 else 256


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, x: np.ndarray | torch.Tensor, *, device: str = "cpu"
) -> torch.Tensor:
    """Logits for every row of ``x`` in eval mode (restores the previous mode), returned on ``device``."""
    was_training = model.training
    model.eval()
    try:
        x = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
        bs = eval_batch_size(model, x)
        out = [model(x[i : i + bs].to(device, non_blocking=True)) for i in range(0, x.shape[0], bs)]
        return torch.cat(out).float()
    finally:
        model.train(was_training)


def accuracy_and_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    y = y.to(logits.device)
    acc = (logits.argmax(1) == y).float().mean().item()
    loss = F.cross_entropy(logits, y).item()
    return acc, loss


def evaluate(model: torch.nn.Module, x, y, *, device: str = "cpu") -> tuple[float, float]:
    logits = predict_logits(model, x, device=device)
    return accuracy_and_loss(logits, as_tensor(y, device))
