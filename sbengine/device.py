"""Device choice at run time, and seeding: the engine is deterministic given a seed
(docs/method.md §5, docs/architecture.md)."""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when available. Asking for ``cuda`` without one is an error, not a silent CPU
    run."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(seed: int, *streams: int) -> torch.Generator:
    """An independent CPU generator for one named random stream (e.g. (seed, epoch) for shuffling)."""
    mixed = seed
    for s in streams:
        mixed = (mixed * 1_000_003 + s + 0x9E3779B9) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


# Below this many multiply-adds per step (≈ parameters × batch rows) a model runs single-threaded.
SINGLE_THREAD_WORK = 8_000_000


@contextmanager
def cpu_threads_for(model: torch.nn.Module, device: str, batch_size: int = 256):
    """Run small models single-threaded on the CPU; larger ones keep torch's thread setting.

    A (100,2)-FCN step is ~4M multiply-adds: OpenMP's hand-offs between threads cost more than they save,
    and when another process shares the cores (the API server, a second job) spinning threads slow such a
    step >10x. A (300,2)-FCN (27M per step) or a CNN gains from every core.
    """
    previous = torch.get_num_threads()
    work = sum(p.numel() for p in model.parameters()) * batch_size
    if device == "cpu" and work < SINGLE_THREAD_WORK:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
