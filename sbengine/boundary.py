"""A 2-D slice of the decision boundary: one S coordinate against one S^c coordinate (docs/method.md §3.6).

The paper's figure predicts on points whose two chosen canonical coordinates sweep a grid and whose other
coordinates are random. Uniform noise in every other coordinate puts most points far from the data, so here
each grid point borrows the remaining coordinates from a random evaluation example instead: the picture then
answers "for realistic inputs, does the prediction change along this S coordinate, this S^c one, or both?".
A simplicity-biased model draws a boundary that is vertical in the S coordinate and ignores the S^c axis.
The result is JSON-able (plotted by sbengine.checks.randomization.decision_boundary without the model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sbengine.data.dataset import Dataset
from sbengine.device import generator
from sbengine.evaluation import predict_logits
from sbengine.metrics import Canonical

GRID = 64
MAX_POINTS = 400


def slice_coordinates(dataset: Dataset, simple_blocks: list[int]) -> tuple[int, int] | None:
    """The first coordinate of S and the first coordinate of the first S^c block that has one; None when the
    dataset has no such pair (S or S^c empty) or is an image (where one pixel against another says little)."""
    if len(dataset.input_shape) != 1:
        return None
    s = dataset.block_indices(simple_blocks)
    sc_blocks = [b for b in dataset.complement_blocks(simple_blocks) if dataset.blocks[b].indices]
    if not s or not sc_blocks:
        return None
    return s[0], dataset.blocks[sc_blocks[0]].indices[0]


@torch.no_grad()
def decision_slice(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    simple_blocks: list[int],
    split: str = "test",
    seed: int = 0,
    device: str = "cpu",
    grid: int = GRID,
    max_points: int = MAX_POINTS,
) -> dict[str, Any] | None:
    """Predicted classes on a ``grid`` × ``grid`` sweep of (S coordinate, S^c coordinate) over the data's
    range, plus up to ``max_points`` data points (their two coordinates and labels) to draw on top."""
    coords = slice_coordinates(dataset, simple_blocks)
    if coords is None:
        return None
    cs, csc = coords
    x, y = dataset.split(split)
    canon = Canonical(dataset, device)
    z = canon.to_canonical(torch.as_tensor(x, device=device))
    gen = generator(seed)
    lo = z[:, [cs, csc]].min(0).values.cpu()
    hi = z[:, [cs, csc]].max(0).values.cpu()
    pad = 0.05 * (hi - lo).clamp_min(1e-6)
    lo, hi = lo - pad, hi + pad
    axis_s = torch.linspace(float(lo[0]), float(hi[0]), grid)
    axis_sc = torch.linspace(float(lo[1]), float(hi[1]), grid)
    background = torch.randint(z.shape[0], (grid * grid,), generator=gen)
    points = z[background.to(z.device)].clone()
    gs, gsc = torch.meshgrid(axis_s, axis_sc, indexing="xy")
    points[:, cs] = gs.reshape(-1).to(points)
    points[:, csc] = gsc.reshape(-1).to(points)
    predicted = predict_logits(model, canon.from_canonical(points), device=device).argmax(1).cpu()
    shown = torch.randperm(z.shape[0], generator=gen)[:max_points].to(z.device)
    return {
        "s_coordinate": int(cs),
        "sc_coordinate": int(csc),
        "s_axis": [float(v) for v in axis_s],
        "sc_axis": [float(v) for v in axis_sc],
        # rows follow the S^c axis, columns the S axis
        "predicted": predicted.reshape(grid, grid).tolist(),
        "points": {
            "s": z[shown, cs].cpu().tolist(),
            "sc": z[shown, csc].cpu().tolist(),
            "label": np.asarray(y)[shown.cpu().numpy()].astype(int).tolist(),
        },
        "split": split,
    }
