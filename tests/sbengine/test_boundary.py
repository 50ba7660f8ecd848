"""The decision-boundary slice (docs/method.md §3.6): orientation, determinism and the figure."""

import pytest
import torch

from sbengine.boundary import decision_slice, slice_coordinates
from sbengine.checks.randomization import decision_boundary
from sbengine.data import build_dataset


@pytest.fixture(scope="module")
def lms5():
    return build_dataset({"preset": "LMS-5", "n_train": 200, "n_val": 100, "n_test": 500, "seed": 0})


def _reads_only(coordinate: int, dataset) -> torch.nn.Module:
    """A linear classifier whose logit difference is the canonical ``coordinate`` (rotation undone)."""
    q = torch.as_tensor(dataset.rotation, dtype=torch.float32) if dataset.rotation is not None else None
    d = dataset.num_features
    w = torch.zeros(2, d)
    w[1, coordinate] = 1.0
    layer = torch.nn.Linear(d, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(w if q is None else w @ q)  # logits = x @ (w q)^T = z @ w^T since x = z q
    return layer


def test_a_model_reading_only_s_draws_a_boundary_across_the_s_axis(lms5):
    cs, csc = slice_coordinates(lms5, [0])
    out = decision_slice(_reads_only(cs, lms5), lms5, simple_blocks=[0], grid=16, max_points=50)
    grid = torch.tensor(out["predicted"])
    assert grid.shape == (16, 16)
    assert (grid == grid[0]).all(), "rows (S^c axis) must not change the prediction"
    assert grid[0].tolist() == sorted(grid[0].tolist()) and grid[0, 0] == 0 and grid[0, -1] == 1
    assert (out["s_coordinate"], out["sc_coordinate"]) == (cs, csc)
    assert len(out["points"]["s"]) == len(out["points"]["label"]) == 50


def test_a_model_reading_only_sc_draws_a_boundary_across_the_sc_axis(lms5):
    cs, csc = slice_coordinates(lms5, [0])
    out = decision_slice(_reads_only(csc, lms5), lms5, simple_blocks=[0], grid=16)
    grid = torch.tensor(out["predicted"])
    assert (grid.T[0] == grid.T).all(), "columns (S axis) must not change the prediction"
    assert len(set(grid[:, 0].tolist())) == 2


def test_slice_is_deterministic_and_plots(lms5):
    model = _reads_only(0, lms5)
    a = decision_slice(model, lms5, simple_blocks=[0], grid=8, seed=3)
    assert a == decision_slice(model, lms5, simple_blocks=[0], grid=8, seed=3)
    assert decision_boundary(a).startswith(b"\x89PNG")


def test_no_slice_without_a_complement_or_for_images(lms5):
    assert slice_coordinates(lms5, list(range(len(lms5.blocks)))) is None
