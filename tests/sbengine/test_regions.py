"""Per-example regions (mask blocks) in randomization: mixed-random compositing (Xiao et al., ICLR 2021)
keeps each block's pixel marginals, reduces to the coordinate permutation for a constant mask, and is
deterministic by seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbengine.data.dataset import MASK_KIND, Dataset, FeatureBlock
from sbengine.metrics import BlockGroup, composite, feature_dependence, permute_columns, randomization

N, H, W = 60, 6, 6


def region_dataset(seed: int = 0) -> Dataset:
    """(3, 6, 6) images whose region (a random box per image) is bright when y = 1: the region predicts."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, N)
    masks = np.zeros((N, H, W), dtype=bool)
    for i in range(N):
        r, c = rng.integers(0, 3, 2)
        masks[i, r : r + 3, c : c + 3] = True
    x = (rng.integers(0, 256, (N, 3, H, W)) / 255).astype(np.float32)
    x[np.broadcast_to(masks[:, None], x.shape) & (y[:, None, None, None] == 1)] = 1.0
    blocks = [
        FeatureBlock("object", MASK_KIND, (), params={"mask": "region"}),
        FeatureBlock("background", MASK_KIND, (), params={"mask": "complement"}),
    ]
    return Dataset(
        name="regions", splits={"test": (x, y)}, input_shape=(3, H, W), num_classes=2, blocks=blocks,
        simple_blocks=[0], rotation=None, seed=0, masks={"test": masks}, storage="uint8",
    )  # fmt: skip


def test_selection_is_each_examples_region_on_every_channel():
    ds = region_dataset()
    s, sc = ds.selection([0], "test"), ds.selection([1], "test")
    assert s.shape == (N, 3 * H * W) and not (s & sc).any() and (s | sc).all()
    assert (s.reshape(N, 3, H, W) == ds.masks["test"][:, None]).all()
    with pytest.raises(ValueError, match="per-example region"):
        ds.block_indices([0])


def test_mask_randomization_keeps_each_blocks_pixel_marginals():
    ds = region_dataset()
    x, _ = ds.split("test")
    z = torch.from_numpy(x).flatten(1)
    s, sc = (torch.from_numpy(ds.selection([b], "test")) for b in (0, 1))
    z_s = composite(z, s, torch.Generator().manual_seed(3))
    z_sc = composite(z, sc, torch.Generator().manual_seed(3))
    assert torch.equal(z_s[~s], z[~s]) and torch.equal(z_sc[~sc], z[~sc]), "the other block is untouched"
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    # every composited pixel is the donor's pixel at the same position, one donor per example (a permutation)
    assert torch.equal(z_s[s], z[perm][s]) and sorted(perm.tolist()) == list(range(N))
    # so S- and S^c-randomizing with one draw exchange pixels between examples, never invent or lose one:
    # every position keeps its multiset of values (its marginal) across the two composites
    for p in range(z.shape[1]):
        pooled = torch.sort(torch.cat([z_s[:, p], z_sc[:, p]])).values
        assert torch.equal(pooled, torch.sort(torch.cat([z[:, p], z[:, p]])).values)
    assert not torch.equal(z_s, z)


def test_a_constant_mask_is_the_coordinate_permutation_draw_for_draw():
    z = torch.randn(50, 20)
    columns = [1, 4, 5, 17]
    constant = torch.zeros(1, 20, dtype=torch.bool)
    constant[0, columns] = True
    expanded = constant.expand(50, 20).clone()
    reference = permute_columns(z, columns, torch.Generator().manual_seed(7))
    assert torch.equal(composite(z, constant, torch.Generator().manual_seed(7)), reference)
    assert torch.equal(composite(z, expanded, torch.Generator().manual_seed(7)), reference)
    for c in columns:  # the coordinate blocks' marginal test, through the mask path
        assert torch.equal(torch.sort(reference[:, c]).values, torch.sort(z[:, c]).values)


class RegionReader(torch.nn.Module):
    """Scores the mean brightness of the image's brightest 3x3 box: uses only the region (the object)."""

    def forward(self, x):
        pooled = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 3, stride=1).flatten(1).amax(1)
        return torch.stack([-pooled, pooled], dim=1) * 10


def test_mask_randomization_is_deterministic_by_seed_and_finds_the_region():
    ds = region_dataset()
    model = RegionReader()
    first = randomization(model, ds, repeats=3, seed=5)
    assert first == randomization(model, ds, repeats=3, seed=5)
    other = randomization(model, ds, repeats=3, seed=6)
    assert other["s_randomized_auc"]["values"] != first["s_randomized_auc"]["values"]
    assert (
        first["auc"] > 0.95 and first["s_randomized_auc"]["mean"] < first["sc_randomized_auc"]["mean"] - 0.2
    )
    rows = feature_dependence(model, ds, groups={"object": BlockGroup((0,)), "background": BlockGroup((1,))})
    assert [r["group"] for r in rows] == ["object", "background"] and rows[0]["accuracy"] < 0.8
    assert (rows[0]["coordinates"], rows[1]["coordinates"]) == (27.0, 81.0), "mean region size per example"


def test_uint8_storage_round_trips_pixels_and_masks(tmp_path):
    ds = region_dataset()
    ds.save(tmp_path)
    with np.load(tmp_path / "arrays.npz") as npz:
        assert npz["x_test"].dtype == np.uint8 and npz["mask_test"].dtype == bool
    loaded = Dataset.load(tmp_path)
    assert np.array_equal(loaded.split("test")[0], ds.split("test")[0])
    assert np.array_equal(loaded.masks["test"], ds.masks["test"]) and loaded.storage == "uint8"


def test_the_report_shows_examples_with_their_regions_and_composites():
    from sbengine.checks import randomization as check

    ds = region_dataset()
    result = randomization(RegionReader(), ds, repeats=2, seed=1)
    result["composites_shown"] = 3
    figures = check.figures(result, ds)
    assert figures["composites"].startswith(b"\x89PNG")
    assert "composites" in [f["name"] for f in check.report_section(result)["figures"]]
    del result["composites_shown"]
    assert "composites" not in check.figures(result, ds), "vectors and tables have no example images"
