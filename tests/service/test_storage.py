"""The content-addressed artifact store."""

from __future__ import annotations

import hashlib

import pytest

from service.storage import ArtifactStore


def test_put_file_moves_into_a_path_derived_from_the_hash(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    src = tmp_path / "weights.bin"
    src.write_bytes(b"abc" * 1000)
    blob = store.put_file(src, move=True)
    assert blob.sha256 == hashlib.sha256(b"abc" * 1000).hexdigest() and blob.size == 3000
    assert not src.exists()
    path = store.path_for(blob.sha256)
    assert path == tmp_path / "artifacts" / blob.sha256[:2] / blob.sha256
    assert path.read_bytes() == b"abc" * 1000
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_identical_content_is_stored_once(tmp_path):
    store = ArtifactStore(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert store.put_file(a, move=True) == store.put_file(b, move=True) == store.put_bytes(b"same")
    assert not a.exists() and not b.exists()


def test_put_file_copy_keeps_the_source(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    src = tmp_path / "keep"
    src.write_bytes(b"data")
    blob = store.put_file(src)
    assert src.exists() and store.exists(blob.sha256)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a" * 63, "g" * 64, ""])
def test_paths_come_from_hashes_only(tmp_path, bad):
    with pytest.raises(ValueError):
        ArtifactStore(tmp_path).path_for(bad)
