import numpy as np
import pytest

from sbengine.data import BlockSpec, Dataset, SyntheticSpec, bayes_accuracy, build_dataset, generate
from sbengine.data.synthetic import ring_interval, slab_width


def canonical(ds: Dataset, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    x, y = ds.split(split)
    z = x.astype(np.float64) @ ds.rotation.T if ds.rotation is not None else x
    return z, y


def unrotated(blocks, n=40_000, seed=0):
    return generate(SyntheticSpec(blocks=blocks, n_train=n, n_val=0, n_test=1000, seed=seed, rotate=False))


@pytest.mark.parametrize(
    ("k", "neg", "pos"),
    [
        (3, [(0, 0.2667)], [(0.4667, 1.0)]),
        (5, [(0, 0.12), (0.76, 1.0)], [(0.32, 0.56)]),
        (7, [(0, 0.057143), (0.571429, 0.685714)], [(0.257143, 0.371429), (0.885714, 1.0)]),
    ],
)
def test_slab_intervals_match_the_paper_table(k, neg, pos):
    ds = unrotated([BlockSpec("slab", k=k)])
    x, y = ds.split("train")
    mag = np.abs(x[:, 0])
    for cls, intervals in ((0, neg), (1, pos)):
        values = mag[y == cls]
        inside = np.zeros(values.shape, bool)
        for lo, hi in intervals:
            inside |= (values >= lo - 1e-4) & (values <= hi + 1e-4)
        assert inside.all(), f"{k}-slab class {cls} has values outside {intervals}"


def test_slab_class_proportions():
    ds = unrotated([BlockSpec("slab", k=5), BlockSpec("slab", k=7)], n=80_000)
    x, y = ds.split("train")
    neg5 = np.abs(x[y == 0, 0])
    assert np.mean(neg5 <= 0.12 + 1e-6) == pytest.approx(0.75, abs=0.01)
    pos7 = np.abs(x[y == 1, 1])
    assert np.mean(pos7 <= 0.371429 + 1e-6) == pytest.approx(0.875, abs=0.01)
    neg7 = np.abs(x[y == 0, 1])
    assert np.mean(neg7 <= 0.057143 + 1e-6) == pytest.approx(0.5, abs=0.01)
    assert y.mean() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("k", [5, 7])
def test_class_conditional_second_moment_is_equal(k):
    ds = unrotated([BlockSpec("slab", k=k)], n=200_000)
    x, y = ds.split("train")
    for cls in (0, 1):
        assert np.mean(x[y == cls, 0] ** 2) == pytest.approx(0.199, abs=0.004)


def test_slab_geometry_formulas():
    assert slab_width(5, 0.1) == pytest.approx(0.24)
    assert ring_interval(5, 2, 0.1) == pytest.approx((0.76, 1.0))
    assert ring_interval(7, 3, 0.1)[1] == pytest.approx(1.0)


def test_linear_support_and_margin():
    ds = unrotated([BlockSpec("linear", margin=0.1)])
    x, y = ds.split("train")
    assert (x[y == 1, 0] >= 0.1 - 1e-6).all() and (x[y == 1, 0] < 1).all()
    assert (x[y == 0, 0] <= -0.1 + 1e-6).all() and (x[y == 0, 0] > -1).all()


def best_threshold_accuracy(col: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(col)
    ys = y[order]
    # predict 1 above threshold: accuracy = (#neg below + #pos above) / n for every cut
    neg_below = np.concatenate(([0], np.cumsum(ys == 0)))
    pos_above = (ys == 1).sum() - np.concatenate(([0], np.cumsum(ys == 1)))
    return float(((neg_below + pos_above) / y.size).max())


def test_noisy_linear_bayes_accuracy_is_095():
    block = BlockSpec("noisy_linear", noise=0.1, noise_mode="margin")
    assert block.coordinate_bayes_accuracy() == pytest.approx(0.95)
    ds = unrotated([block], n=100_000)
    x, y = ds.split("train")
    assert best_threshold_accuracy(x[:, 0], y) == pytest.approx(0.95, abs=0.005)
    inside_band = np.abs(x[:, 0]) < 0.1
    assert inside_band.mean() == pytest.approx(0.1, abs=0.005)


def test_flip_noise_bayes_accuracy():
    block = BlockSpec("noisy_linear", noise=0.2, noise_mode="flip")
    assert bayes_accuracy([block]) == pytest.approx(0.8)
    ds = unrotated([block], n=50_000)
    x, y = ds.split("train")
    assert best_threshold_accuracy(x[:, 0], y) == pytest.approx(0.8, abs=0.01)


def test_noisy_slab_margin_mode_puts_points_in_gaps():
    block = BlockSpec("noisy_slab", k=5, noise=0.2, noise_mode="margin")
    ds = unrotated([block], n=20_000)
    x, _ = ds.split("train")
    mag = np.abs(x[:, 0])
    in_gap = ((mag > 0.12) & (mag < 0.32)) | ((mag > 0.56) & (mag < 0.76))
    assert in_gap.mean() == pytest.approx(0.2, abs=0.01)
    assert bayes_accuracy([block]) == pytest.approx(0.9)


def test_noisy_slab_flip_mode_moves_points_to_other_class():
    block = BlockSpec("noisy_slab", k=7, noise=0.1, noise_mode="flip")
    ds = unrotated([block], n=40_000)
    x, y = ds.split("train")
    mag = np.abs(x[:, 0])
    positive_support = ((mag >= 0.257) & (mag <= 0.372)) | (mag >= 0.885)
    wrong = np.where(y == 1, ~positive_support, positive_support)
    assert wrong.mean() == pytest.approx(0.1, abs=0.01)


def test_bayes_accuracy_of_combinations():
    clean = BlockSpec("slab", k=5)
    noisy = BlockSpec("noisy_linear", noise=0.1)
    noise = BlockSpec("noise", count=3)
    assert bayes_accuracy([noisy, clean]) == 1.0
    assert bayes_accuracy([noise]) == 0.5
    assert bayes_accuracy([BlockSpec("noisy_linear", noise=0.1, count=2)]) == pytest.approx(1 - 0.01 / 2)
    # three flip channels with p = 0.1: majority errs when >= 2 flip
    three = BlockSpec("noisy_linear", noise=0.1, noise_mode="flip", count=3)
    assert bayes_accuracy([three]) == pytest.approx(1 - (3 * 0.01 * 0.9 + 0.001))
    mixed = [
        BlockSpec("noisy_linear", noise=0.1, noise_mode="flip"),
        BlockSpec("noisy_linear", noise=0.2, noise_mode="flip"),
    ]
    assert bayes_accuracy(mixed) == pytest.approx(0.9)


def test_determinism_by_seed():
    a = build_dataset({"preset": "LMS-5", "n_train": 500, "n_val": 100, "n_test": 100, "seed": 3})
    b = build_dataset({"preset": "LMS-5", "n_train": 500, "n_val": 100, "n_test": 100, "seed": 3})
    c = build_dataset({"preset": "LMS-5", "n_train": 500, "n_val": 100, "n_test": 100, "seed": 4})
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.split(split)[0], b.split(split)[0])
        np.testing.assert_array_equal(a.split(split)[1], b.split(split)[1])
    np.testing.assert_array_equal(a.rotation, b.rotation)
    assert not np.array_equal(a.split("train")[0], c.split("train")[0])


@pytest.mark.parametrize("rotate", [True, False])
def test_generating_in_chunks_gives_the_same_rows(monkeypatch, rotate):
    """Generation works in chunks of a fixed byte size (rotated rows, unrotated column blocks); with many
    small chunks the draws and the labels are the same, and the rows the same up to float32 rounding of
    the rotation's products (unrotated: exactly)."""
    import sbengine.data.synthetic as synthetic

    request = {"preset": "MS-(5,7)", "n_train": 3000, "n_val": 0, "n_test": 100, "seed": 5, "rotate": rotate}
    whole = build_dataset(request)
    monkeypatch.setattr(synthetic, "ROTATION_CHUNK_BYTES", 64 * 50 * 8)  # 64 rows at a time
    monkeypatch.setattr(synthetic, "COLUMN_BLOCK_BYTES", 3 * 3100 * 8)  # 3 columns at a time
    chunked = build_dataset(request)
    for split in ("train", "test"):
        np.testing.assert_array_equal(chunked.split(split)[1], whole.split(split)[1])
        np.testing.assert_allclose(chunked.split(split)[0], whole.split(split)[0], rtol=0, atol=1e-6 * rotate)


def test_rotation_is_orthogonal_and_canonical_recovers_blocks():
    ds = build_dataset({"preset": "LMS-5", "n_train": 2000, "n_val": 0, "n_test": 100})
    q = ds.rotation
    np.testing.assert_allclose(q @ q.T, np.eye(50), atol=1e-10)
    z, y = canonical(ds)
    assert ((z[:, 0] > 0) == (y == 1)).all()


def test_presets_shapes_and_blocks():
    for name, dims, n_blocks in (
        ("LMS-5", 50, 2),
        ("MS-(5,7)", 50, 2),
        ("noisy-LMS-7", 50, 2),
        ("AdvMS-(5,7)", 20, 2),
    ):
        ds = build_dataset({"preset": name, "n_train": 100, "n_val": 10, "n_test": 10})
        assert ds.input_shape == (dims,)
        assert len(ds.blocks) == n_blocks
        assert sorted(i for b in ds.blocks for i in b.indices) == list(range(dims))
    noisy = build_dataset({"preset": "noisy-LMS-7", "n_train": 100, "n_val": 0, "n_test": 10})
    assert noisy.blocks[0].bayes_accuracy == pytest.approx(0.95)
    assert noisy.blocks[1].bayes_accuracy == 1.0


def test_explicit_composition_in_any_order_and_count():
    ds = build_dataset(
        {
            "blocks": [
                {"type": "slab", "k": 3, "count": 2},
                {"type": "noise", "count": 5},
                {"type": "linear", "margin": 0.2},
                {"type": "noisy_slab", "k": 7, "noise": 0.1, "count": 3},
            ],
            "n_train": 200,
            "n_test": 50,
            "n_val": 0,
            "rotate": False,
            "simple_blocks": [2],
        }
    )
    assert ds.input_shape == (11,)
    assert [b.indices for b in ds.blocks] == [(0, 1), (2, 3, 4, 5, 6), (7,), (8, 9, 10)]
    x, y = ds.split("train")
    assert (np.abs(x[:, 7]) >= 0.2 - 1e-6).all()
    assert ((x[:, 2:7] >= 0) & (x[:, 2:7] < 1)).all()
    assert ds.simple_blocks == [2]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"preset": "LMS-9"}, "unknown preset"),
        ({"blocks": [{"type": "slab", "k": 4}]}, "k must be one of"),
        ({"blocks": [{"type": "slab", "k": 7, "margin": 0.2}]}, "leaves no room"),
        ({"blocks": [{"type": "linear", "margni": 0.1}]}, "unknown option 'margni'"),
        ({"blocks": []}, "non-empty"),
        ({"preset": "LMS-5", "n_train": -1}, "n_train"),
        ({"preset": "LMS-5", "colour": 1}, "unknown dataset option 'colour'"),
        ({"blocks": [{"type": "noisy_linear", "noise": 1.5}]}, "noise must be in"),
        ({"preset": "LMS-5", "simple_blocks": [5]}, "out of range"),
        ({}, "needs 'preset' or 'blocks'"),
    ],
)
def test_bad_requests_raise_clear_errors(request_, message):
    with pytest.raises(ValueError, match=message):
        build_dataset({"n_train": 10, "n_test": 10, **request_} if "n_train" not in request_ else request_)


def test_save_load_roundtrip(tmp_path):
    ds = build_dataset({"preset": "MS-(5,7)", "n_train": 300, "n_val": 50, "n_test": 50, "seed": 1})
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert back.describe() == ds.describe()
    np.testing.assert_array_equal(back.split("val")[0], ds.split("val")[0])
    np.testing.assert_array_equal(back.rotation, ds.rotation)
    assert back.spec["seed"] == 1 and back.spec["preset"] == "MS-(5,7)"
    regenerated = build_dataset({"preset": "MS-(5,7)", "n_train": 300, "n_val": 50, "n_test": 50, "seed": 1})
    np.testing.assert_array_equal(regenerated.split("train")[0], back.split("train")[0])
