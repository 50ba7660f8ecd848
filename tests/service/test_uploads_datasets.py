"""POST /v1/datasets/uploads: arrays plus declared feature blocks become a ready dataset in the engine's own
format; bad arrays, blocks and hostile files get a clear 4xx and leave nothing behind."""

from __future__ import annotations

import io
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from service_testing import fields, problem
from upload_testing import CreatesFile, assert_nothing_left, stored_files, upload, validator_user_env

from service.settings import Settings
from service.uploads.stream import STALE_SECONDS

ROUTE = "/v1/datasets/uploads"
VALIDATOR_MAIN = Path(__file__).resolve().parents[2] / "sbengine" / "uploads" / "__main__.py"
SIGNAL_NOISE = [{"name": "signal", "indices": [0]}, {"name": "noise", "indices": list(range(1, 10))}]
HALVES = [{"name": "top", "rows": [0, 4]}, {"name": "bottom", "rows": [4, 8]}]


@pytest.fixture
def settings(tmp_path, clean_env) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_upload_bytes=1 << 20, max_samples=1000)


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def xy_npz() -> bytes:
    x, y = vectors()
    return npz(x=x, y=y)


def vectors(n: int = 60, d: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 0] = 2.0 * y - 1.0
    return x, y


def test_vectors_with_a_split_and_index_blocks(client, auth, settings):
    x, y = vectors()
    split = np.repeat([0, 1, 2], 20)
    response = upload(client, auth, ROUTE, npz(x=x, y=y, split=split), filename="data.npz",
                      blocks=SIGNAL_NOISE, name="mine")  # fmt: skip
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert response.headers["location"] == f"/v1/datasets/{dataset['id']}"
    assert dataset["status"] == "ready" and dataset["name"] == "mine"
    assert dataset["input_shape"] == [10] and dataset["num_classes"] == 2
    assert dataset["sizes"] == {"train": 20, "val": 20, "test": 20}
    assert [(b["name"], b["kind"], b["indices"]) for b in dataset["blocks"]] == [
        ("signal", "indices", [0]), ("noise", "indices", list(range(1, 10)))
    ]  # fmt: skip
    assert dataset["simple_blocks"] == [0] and dataset["rotated"] is False
    assert dataset["spec"]["upload"]["format"] == "npz"
    assert {a["kind"] for a in dataset["artifacts"]} == {"arrays", "description"}
    arrays_url = next(a["url"] for a in dataset["artifacts"] if a["kind"] == "arrays")
    with np.load(io.BytesIO(client.get(arrays_url, headers=auth).content), allow_pickle=False) as stored:
        assert sorted(stored.files) == ["x_test", "x_train", "x_val", "y_test", "y_train", "y_val"]
        np.testing.assert_array_equal(stored["x_val"], x[20:40])
        assert stored["y_train"].dtype == np.int64
    job = client.get(f"/v1/jobs/{dataset['job_id']}", headers=auth).json()
    assert job["kind"] == "upload_dataset" and job["state"] == "succeeded"
    assert_nothing_left(settings, stored_files(settings))


def test_images_as_safetensors_with_box_blocks(client, auth, settings):
    from safetensors.numpy import save

    from sbengine.data import image_region_indices

    rng = np.random.default_rng(0)
    x = rng.random((12, 3, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 12)
    blocks = [*HALVES, {"name": "patch", "channels": [0, 1], "rows": [2, 4], "cols": [2, 4]}]
    response = upload(client, auth, ROUTE, save({"x_test": x, "y_test": y}), filename="images.safetensors",
                      blocks=blocks, simple_blocks=[1], num_classes="4")  # fmt: skip
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["input_shape"] == [3, 8, 8] and dataset["num_classes"] == 4
    assert dataset["sizes"] == {"test": 12} and dataset["simple_blocks"] == [1]
    top, bottom, patch = dataset["blocks"]
    assert top["kind"] == "image_region" and top["params"] == {"rows": [0, 4]}
    assert top["indices"] == list(image_region_indices((3, 8, 8), rows=(0, 4)))
    assert bottom["indices"] == list(image_region_indices((3, 8, 8), rows=(4, 8)))
    assert patch["indices"] == [18, 19, 26, 27]


def _bad_arrays() -> dict[str, tuple[bytes, dict, str]]:
    x, y = vectors()
    with_nan, with_inf = x.copy(), x.copy()
    with_nan[7, 3] = np.nan
    with_inf[2, 0] = np.inf
    return {
        "NaN": (npz(x=with_nan, y=y), {}, "NaN or infinite values (first in row 7)"),
        "inf": (npz(x=with_inf, y=y), {}, "NaN or infinite values (first in row 2)"),
        "float64 overflow": (npz(x=np.full((4, 10), 1e300), y=np.zeros(4, int)), {}, "NaN or infinite"),
        "index out of range": (
            npz(x=x, y=y), {"blocks": [{"name": "a", "indices": [0, 10]}]}, "index 10 is out of range"
        ),
        "box outside": (
            npz(x=np.zeros((4, 3, 8, 8)), y=np.zeros(4, int)), {"blocks": [{"name": "a", "rows": [0, 9]}]},
            "reaches past",
        ),
        "box on vectors": (npz(x=x, y=y), {"blocks": [{"name": "a", "rows": [0, 1]}]}, "need image inputs"),
        "label range": (npz(x=x, y=y + 1), {"num_classes": "2"}, "label 2 is outside 0..1"),
        "negative label": (npz(x=x, y=y - 1), {}, "label -1 is outside"),
        "float labels": (npz(x=x, y=y.astype(float)), {}, "integer class labels"),
        "lengths": (npz(x=x, y=y[:-1]), {}, "one label per row"),
        "no labels": (npz(x=x), {}, "needs both"),
        "unknown key": (npz(x=x, y=y, w=y), {}, "unexpected arrays 'w'"),
        "bad split": (npz(x=x, y=y, split=np.full(60, 5)), {}, "'split' must hold"),
        "too many rows": (
            npz(x=np.zeros((1001, 2), np.float32), y=np.zeros(1001, int)),
            {"blocks": [{"name": "a", "indices": [0]}]},
            "SBAUDIT_MAX_SAMPLES",
        ),
        "strings": (npz(x=np.array([["a"] * 10] * 4), y=np.zeros(4, int)), {}, "numbers only"),
    }  # fmt: skip


def test_bad_arrays_and_blocks_are_refused_with_their_reason(client, auth, settings):
    before = stored_files(settings)
    for case, (data, form, message) in _bad_arrays().items():
        form = {"blocks": SIGNAL_NOISE, **form}
        body = problem(upload(client, auth, ROUTE, data, filename="d.npz", **form), 422)
        assert message in body["detail"], (case, body["detail"])
        assert_nothing_left(settings, before)
    body = problem(upload(client, auth, ROUTE, xy_npz(), blocks=[{"name": "a", "indices": [0, 99]}]), 422)
    assert body["errors"][0]["field"] == "body.blocks.0.indices"


def test_hostile_files_run_nothing_and_leave_nothing(client, auth, settings, tmp_path):
    before = stored_files(settings)
    target = tmp_path / "created-by-unpickling"
    x, y = vectors()
    # An object array is stored as a pickle inside the .npz: refused from its .npy header, never loaded.
    evil = np.empty(1, dtype=object)
    evil[0] = CreatesFile(target)
    body = problem(upload(client, auth, ROUTE, npz(x=x, y=y, split=evil), blocks=SIGNAL_NOISE), 422)
    assert "numbers only" in body["detail"] and not target.exists()
    # A bare pickle is not a dataset file.
    problem(upload(client, auth, ROUTE, pickle.dumps(CreatesFile(target)), blocks=SIGNAL_NOISE), 422)
    assert not target.exists()
    # A zip bomb: 50 MiB of zeros in ~50 KiB; refused from its directory, before anything is inflated.
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", bytes(50 << 20))
    body = problem(upload(client, auth, ROUTE, bomb.getvalue(), blocks=SIGNAL_NOISE), 413)
    assert "expands to more than" in body["detail"]
    # An .npy header claiming far more data than its member holds.
    lying = io.BytesIO()
    with zipfile.ZipFile(lying, "w") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
        )
        archive.writestr("x.npy", header.getvalue() + bytes(64))
        archive.writestr("y.npy", npz_member(y))
    body = problem(upload(client, auth, ROUTE, lying.getvalue(), blocks=SIGNAL_NOISE), 422)
    assert "claims shape" in body["detail"]
    # Over the size limit, and path-like names.
    problem(upload(client, auth, ROUTE, bytes(settings.max_upload_bytes + 1), blocks=SIGNAL_NOISE), 413)
    for name in ("../../data.npz", "/tmp/data.npz"):
        body = problem(upload(client, auth, ROUTE, npz(x=x, y=y), filename=name, blocks=SIGNAL_NOISE), 422)
        assert "plain file name" in body["detail"]
    assert_nothing_left(settings, before)


def npz_member(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_block_declarations_are_validated_before_the_file_is_read(client, auth, settings):
    stale = settings.uploads_dir / "left-by-a-crashed-server"
    stale.mkdir(parents=True)
    (stale / "upload").write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * STALE_SECONDS,) * 2)
    data = xy_npz()
    cases = [
        ({}, "body.blocks"),
        ({"blocks": []}, "body.blocks"),
        ({"blocks": [{"name": "a"}]}, "body.blocks.0"),
        ({"blocks": [{"name": "a", "indices": [0], "rows": [0, 1]}]}, "body.blocks.0"),
        ({"blocks": [{"name": "a", "indices": []}]}, "body.blocks.0.indices"),
        ({"blocks": [{"name": "a", "indices": [-1]}]}, "body.blocks.0.indices.0"),
        ({"blocks": [{"name": "a", "rows": [4, 4]}]}, "body.blocks.0.rows"),
        ({"blocks": [{"name": "a", "rows": [0, 1, 2]}]}, "body.blocks.0.rows"),
        ({"blocks": [{"name": "a", "indices": [0]}, {"name": "a", "indices": [1]}]}, "body.blocks"),
        ({"blocks": SIGNAL_NOISE, "simple_blocks": [2]}, "body.simple_blocks"),
        ({"blocks": SIGNAL_NOISE, "simple_blocks": [0, 0]}, "body.simple_blocks"),
        ({"blocks": SIGNAL_NOISE, "num_classes": "1"}, "body.num_classes"),
        ({"blocks": "[{"}, "body.blocks"),
    ]
    before = stored_files(settings)
    for form, field in cases:
        named = fields(upload(client, auth, ROUTE, data, **form))
        assert any(f == field or f.startswith(field + ".") for f in named), (form, named)
    assert_nothing_left(settings, before)
    assert not stale.exists(), "a crashed server's leftovers are swept by the next upload"


def test_the_api_process_stays_free_of_numpy_and_torch_through_an_upload(tmp_path):
    """Arrays are read in the validator process; the API only streams, hashes and checks framing."""
    import subprocess
    import sys
    import textwrap

    data = tmp_path / "data.npz"
    data.write_bytes(xy_npz())
    code = textwrap.dedent(
        f"""
        import json, sys
        from fastapi.testclient import TestClient
        from service import migrate
        from service.app import create_app
        from service.auth import create_key
        from service.db import Database
        from service.settings import Settings

        # The program's command, as sbserver wires it (naming it imports nothing of the engine).
        program = [sys.executable, "-I", {str(VALIDATOR_MAIN)!r}]
        settings = Settings(data_dir={str(tmp_path / "data")!r})
        migrate.upgrade(settings.database_url)
        db = Database.connect(settings.database_url)
        key, _ = create_key(db, owner="x")
        with TestClient(create_app(settings, db=db, upload_validator=program)) as client:
            r = client.post("/v1/datasets/uploads", headers={{"Authorization": "Bearer " + key}},
                            data={{"blocks": json.dumps({SIGNAL_NOISE!r})}},
                            files={{"file": ("d.npz", open({str(data)!r}, "rb").read())}})
            assert r.status_code == 201, r.text
        heavy = sorted(
            m for m in sys.modules if m.split(".")[0] in ("torch", "sbengine", "numpy", "safetensors")
        )
        print(",".join(heavy))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **validator_user_env()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the API imported: {out.stdout.strip()[:300]}"
