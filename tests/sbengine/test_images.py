"""Raw MNIST/CIFAR-10 loading and the MNIST-CIFAR builder, on tiny files in the real on-disk formats."""

from __future__ import annotations

import gzip
import os
import pickle
import types
from pathlib import Path

import numpy as np
import pytest

from sbengine.data.dataset import Dataset, image_region_indices
from sbengine.data.images import default_raw_data_dir, load_cifar10, load_mnist
from sbengine.data.mnist_cifar import (
    VARIANTS,
    build_mnist_cifar,
    build_mnist_cifar_from_spec,
    build_mnist_cifar_variant,
)
from tests.sbengine.image_files import (
    CIFAR_FILLS,
    decode,
    idx_bytes,
    labels_from_counts,
    write_cifar10,
    write_mnist,
)

# Pool sizes chosen so that each variant is limited by a different pool.
MNIST_TRAIN = {0: 60, 1: 70, 4: 33, 2: 3, 3: 3, 5: 3, 6: 3, 7: 3, 8: 3, 9: 3}
MNIST_TEST = {0: 12, 1: 15, 4: 9, 2: 2, 3: 2, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2}
CIFAR_TRAIN = {0: 30, 1: 50, 8: 35, 9: 40, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2}
CIFAR_TEST = {0: 8, 1: 11, 8: 10, 9: 13, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A raw-data root with MNIST train as plain IDX, MNIST test gzipped, and CIFAR-10 python batches."""
    root = tmp_path_factory.mktemp("raw")
    labels = {
        "mnist_train": labels_from_counts(MNIST_TRAIN, 1),
        "mnist_test": labels_from_counts(MNIST_TEST, 2),
        "cifar_train": labels_from_counts(CIFAR_TRAIN, 3),
        "cifar_test": labels_from_counts(CIFAR_TEST, 4),
    }
    images = {
        "mnist_train": write_mnist(root, train=True, labels=labels["mnist_train"]),
        "mnist_test": write_mnist(root, train=False, labels=labels["mnist_test"], gz=True),
    }
    images["cifar_train"], images["cifar_test"] = write_cifar10(
        root, train_labels=labels["cifar_train"], test_labels=labels["cifar_test"]
    )
    return types.SimpleNamespace(root=root, labels=labels, images=images)


@pytest.fixture(scope="module")
def standard(raw):
    return build_mnist_cifar(root=raw.root, seed=0, download=False)


def halves(x):
    """(MNIST 28x28 crop, CIFAR half) of composed images."""
    return x[:, :, 2:30, 2:30], x[:, :, 32:, :]


def sources(x):
    """(mnist classes, mnist indices, cifar classes, cifar indices) encoded in composed images."""
    m, c = halves(x)
    return (*decode(m), *decode(c))


# --- raw loaders ----------------------------------------------------------------------------------------


def test_load_mnist_reads_plain_and_gzipped_idx(raw):
    for train, key in ((True, "mnist_train"), (False, "mnist_test")):  # train plain, test .gz
        images, labels = load_mnist(raw.root, train=train, download=False)
        assert images.dtype == np.uint8 and images.shape == (
            sum(MNIST_TRAIN.values() if train else MNIST_TEST.values()),
            28,
            28,
        )
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, raw.images[key])
        np.testing.assert_array_equal(labels, raw.labels[key])


def test_load_cifar10_concatenates_batches_channels_first(raw):
    images, labels = load_cifar10(raw.root, train=True, download=False)
    assert images.dtype == np.uint8 and images.shape == (sum(CIFAR_TRAIN.values()), 3, 32, 32)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, raw.images["cifar_train"])
    np.testing.assert_array_equal(labels, raw.labels["cifar_train"])
    assert (images[:, 1] == CIFAR_FILLS[1]).all() and (images[:, 2] == CIFAR_FILLS[2]).all()
    test_images, test_labels = load_cifar10(raw.root, train=False, download=False)
    np.testing.assert_array_equal(test_images, raw.images["cifar_test"])
    np.testing.assert_array_equal(test_labels, raw.labels["cifar_test"])


def test_load_cifar10_accepts_bytes_keys(tmp_path):
    labels = labels_from_counts({3: 4, 7: 3}, 0)
    write_cifar10(tmp_path, train_labels=labels, test_labels=labels, bytes_keys=True)
    images, got = load_cifar10(tmp_path, train=True, download=False)
    np.testing.assert_array_equal(got, labels)
    assert images.shape == (7, 3, 32, 32)


def test_missing_files_name_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path, train=True, download=False)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "\n" not in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "SBAUDIT_RAW_DATA_DIR"):
        assert name in message
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(tmp_path, train=True, download=False)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert all(f"data_batch_{i}" in message for i in range(1, 6)) and "test_batch" not in message
    with pytest.raises(FileNotFoundError, match="MNIST training files not found"):
        build_mnist_cifar(root=tmp_path, download=False)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    """Missing files are fetched with torchvision's own class (same folders); a failed fetch is the same
    one-line FileNotFoundError, carrying the reason."""
    import torchvision.datasets

    labels = labels_from_counts({0: 3, 1: 2}, 0)
    calls = []

    def fake_mnist(root, train, download):
        calls.append((root, train, download))
        write_mnist(tmp_path, train=train, labels=labels, gz=True)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    _, got = load_mnist(tmp_path, train=False)
    assert calls == [(str(tmp_path), False, True)]
    np.testing.assert_array_equal(got, labels)

    def offline(root, train, download):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz:\nTried mirrors")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(FileNotFoundError, match="download failed: RuntimeError: Error downloading") as err:
        load_cifar10(tmp_path, train=True)
    assert "\n" not in str(err.value)


def test_corrupt_idx_raises_value_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(images, 2049))  # labels magic on images
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, dtype=np.uint8), 2049))
    with pytest.raises(ValueError, match="magic number 2049.*expected 2051"):
        load_mnist(tmp_path, train=True, download=False)
    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(images, 2051)[:-5])  # truncated
    with pytest.raises(ValueError, match="size mismatch"):
        load_mnist(tmp_path, train=True, download=False)
    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(images, 2051))
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(idx_bytes(images, 2051))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="gzip"):
        load_mnist(tmp_path, train=False, download=False)
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 3, 1], dtype=np.uint8), 2049))
    with pytest.raises(ValueError, match="labels for 2 images"):
        load_mnist(tmp_path, train=True, download=False)


class _Planted:
    def __reduce__(self):
        return (os.getenv, ("HOME",))


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    labels = labels_from_counts({1: 2, 9: 2}, 0)
    write_cifar10(tmp_path, train_labels=labels, test_labels=labels)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": _Planted()}))
    with pytest.raises(ValueError, match="refusing to load"):
        load_cifar10(tmp_path, train=False, download=False)


def test_default_raw_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("SBAUDIT_RAW_DATA_DIR", raising=False)
    assert default_raw_data_dir() == Path("sbaudit-data/raw")
    monkeypatch.setenv("SBAUDIT_RAW_DATA_DIR", str(tmp_path))
    assert default_raw_data_dir() == tmp_path


# --- MNIST-CIFAR ---------------------------------------------------------------------------------------


def test_layout_shapes_and_blocks(standard):
    ds = standard
    assert ds.name == "MNIST-CIFAR" and ds.input_shape == (3, 64, 32) and ds.num_classes == 2
    assert set(ds.splits) == {"train", "test"}
    for x, y in ds.splits.values():
        assert x.dtype == np.float32 and x.shape[1:] == (3, 64, 32) and y.dtype == np.int64
        assert x.min() == 0.0 and x.max() == 1.0
    assert [b.name for b in ds.blocks] == ["mnist", "cifar"] and ds.simple_blocks == [0]
    assert ds.blocks[0].indices == image_region_indices((3, 64, 32), rows=(0, 32))
    assert ds.blocks[1].indices == image_region_indices((3, 64, 32), rows=(32, 64))
    assert ds.blocks[0].params["rows"] == [0, 32] and ds.blocks[1].params["rows"] == [32, 64]
    assert all(b.kind == "image_region" and b.bayes_accuracy is None for b in ds.blocks)
    assert ds.rotation is None and ds.seed == 0


def test_pixels_padding_and_channels(standard, raw):
    """MNIST on top, zero-padded by 2 px and copied to 3 channels; CIFAR below, channels untouched; /255."""
    for split, (x, _) in standard.splits.items():
        top = x[:, :, :32, :]
        border = np.ones((32, 32), dtype=bool)
        border[2:30, 2:30] = False
        assert (top[:, :, border] == 0).all()
        assert (top[:, 0] == top[:, 1]).all() and (top[:, 0] == top[:, 2]).all()
        _, m_idx, _, c_idx = sources(x)
        mnist, cifar = halves(x)
        np.testing.assert_array_equal(mnist[:, 0], raw.images[f"mnist_{split}"][m_idx] / np.float32(255))
        np.testing.assert_array_equal(cifar, raw.images[f"cifar_{split}"][c_idx] / np.float32(255))
        assert len(set(m_idx)) == len(m_idx) and len(set(c_idx)) == len(c_idx)  # no image used twice


def test_labels_match_both_halves_and_pools_are_truncated(standard):
    for split, mnist_counts, cifar_counts in (
        ("train", MNIST_TRAIN, CIFAR_TRAIN),
        ("test", MNIST_TEST, CIFAR_TEST),
    ):
        x, y = standard.split(split)
        m_cls, _, c_cls, _ = sources(x)
        np.testing.assert_array_equal(m_cls, np.where(y == 1, 1, 0))
        np.testing.assert_array_equal(c_cls, np.where(y == 1, 9, 1))
        n = min(mnist_counts[0], mnist_counts[1], cifar_counts[1], cifar_counts[9])
        assert np.bincount(y).tolist() == [n, n]
        assert 0 < y[: len(y) // 2].mean() < 1  # shuffled, not blocks of one class


def test_randomize_mnist_decouples_mnist_half_only(raw, standard):
    ds = build_mnist_cifar(root=raw.root, randomize="mnist", seed=0, download=False)
    assert ds.name == "MNIST-CIFAR [MNIST-randomized]" and ds.spec["randomize"] == "mnist"
    x, y = ds.split("train")
    m_cls, _, c_cls, c_idx = sources(x)
    np.testing.assert_array_equal(c_cls, np.where(y == 1, 9, 1))  # CIFAR still carries the label
    assert set(m_cls) == {0, 1}
    assert 0.3 < (m_cls == y).mean() < 0.7  # MNIST half no longer does
    kept = MNIST_TRAIN[0] + MNIST_TRAIN[1]
    n = min(kept // 2, kept - kept // 2, CIFAR_TRAIN[1], CIFAR_TRAIN[9])
    assert np.bincount(y).tolist() == [n, n]
    # same seed, same n: the CIFAR side (pools, pairing order, labels) is exactly the standard one
    np.testing.assert_array_equal(y, standard.split("train")[1])
    np.testing.assert_array_equal(c_idx, sources(standard.split("train")[0])[3])


def test_randomize_cifar_decouples_cifar_half_only(raw, standard):
    ds = build_mnist_cifar(root=raw.root, randomize="cifar", seed=0, download=False)
    for split in ("train", "test"):
        x, y = ds.split(split)
        m_cls, m_idx, c_cls, _ = sources(x)
        np.testing.assert_array_equal(m_cls, y)
        assert set(c_cls) == {1, 9} and not np.array_equal(c_cls, np.where(y == 1, 9, 1))
    assert 0.3 < (sources(ds.split("train")[0])[2] == np.where(ds.split("train")[1] == 1, 9, 1)).mean() < 0.7
    with pytest.raises(ValueError, match="randomize"):
        build_mnist_cifar(root=raw.root, randomize="both", download=False)


def test_seed_determinism(raw, standard):
    again = build_mnist_cifar(root=raw.root, seed=0, download=False)
    other = build_mnist_cifar(root=raw.root, seed=1, download=False)
    for split in ("train", "test"):
        np.testing.assert_array_equal(again.split(split)[0], standard.split(split)[0])
        np.testing.assert_array_equal(again.split(split)[1], standard.split(split)[1])
        assert not np.array_equal(other.split(split)[1], standard.split(split)[1])
        assert not np.array_equal(sources(other.split(split)[0])[1], sources(standard.split(split)[0])[1])


def test_val_split_and_size_caps(raw, standard):
    ds = build_mnist_cifar(root=raw.root, n_val=11, n_train=20, n_test=7, download=False)
    assert {k: len(v[1]) for k, v in ds.splits.items()} == {"train": 20, "val": 11, "test": 7}
    assert np.bincount(ds.split("train")[1]).tolist() == [10, 10]
    assert sorted(np.bincount(ds.split("val")[1]).tolist()) == [5, 6]
    assert sorted(np.bincount(ds.split("test")[1]).tolist()) == [3, 4]
    train_m = set(sources(ds.split("train")[0])[1])
    val_m = set(sources(ds.split("val")[0])[1])
    assert not train_m & val_m  # validation is carved out of the training pairs, never shared
    assert train_m | val_m <= set(sources(standard.split("train")[0])[1])
    full = build_mnist_cifar(root=raw.root, n_val=11, download=False)
    assert len(full.split("train")[1]) + len(full.split("val")[1]) == len(standard.split("train")[1])
    with pytest.raises(ValueError, match="n_train=1000 is more than the"):
        build_mnist_cifar(root=raw.root, n_train=1000, download=False)
    with pytest.raises(ValueError, match="n_val"):
        build_mnist_cifar(root=raw.root, n_val=-1, download=False)


@pytest.mark.parametrize("variant", ["B", "C"])
def test_variants_select_their_classes(raw, variant):
    ds = build_mnist_cifar_variant(variant, root=raw.root, download=False)
    (m_neg, m_pos), (c_neg, c_pos) = VARIANTS[variant]
    assert ds.name == f"MNIST-CIFAR:{variant}"
    assert ds.spec["mnist_classes"] == [m_neg, m_pos] and ds.spec["cifar_classes"] == [c_neg, c_pos]
    x, y = ds.split("train")
    m_cls, _, c_cls, _ = sources(x)
    np.testing.assert_array_equal(m_cls, np.where(y == 1, m_pos, m_neg))
    np.testing.assert_array_equal(c_cls, np.where(y == 1, c_pos, c_neg))
    n = min(MNIST_TRAIN[m_neg], MNIST_TRAIN[m_pos], CIFAR_TRAIN[c_neg], CIFAR_TRAIN[c_pos])
    assert np.bincount(y).tolist() == [n, n]
    with pytest.raises(ValueError, match="variant"):
        build_mnist_cifar_variant("D", root=raw.root, download=False)


def test_grouped_cifar_classes(raw):
    """cifar_classes=None: classes 0-4 vs 5-9 (the original's intent, broken there, docs/method.md §12.2)."""
    ds = build_mnist_cifar(root=raw.root, cifar_classes=None, download=False)
    assert ds.spec["cifar_classes"] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    x, y = ds.split("train")
    np.testing.assert_array_equal(sources(x)[2] >= 5, y == 1)
    with pytest.raises(ValueError, match="overlap"):
        build_mnist_cifar(root=raw.root, mnist_classes=(1, [1, 2]), download=False)
    with pytest.raises(ValueError, match="0..9"):
        build_mnist_cifar(root=raw.root, mnist_classes=(0, 10), download=False)


def test_save_load_and_rebuild_from_spec(raw, tmp_path):
    ds = build_mnist_cifar(root=raw.root, n_val=6, seed=3, download=False)
    ds.save(tmp_path / "ds")
    loaded = Dataset.load(tmp_path / "ds")
    assert loaded.describe() == ds.describe()
    rebuilt = build_mnist_cifar_from_spec(loaded.spec, root=raw.root, download=False)
    for split in ("train", "val", "test"):
        for a, b, c in zip(ds.split(split), loaded.split(split), rebuilt.split(split), strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
            assert a.dtype == b.dtype
