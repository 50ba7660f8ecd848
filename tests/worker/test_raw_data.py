"""Issue 16, item 6: an image preset whose raw files this server neither has nor may download is a 422 at
submission naming what is missing and how an operator provides it; a job that still finds them missing
(the files removed after submission) fails with that reason, no server path and no "internal error"."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from service_testing import problem

from service import raw_data
from worker.runner import run_job

pytest.importorskip("torch")

REQUEST = {"preset": "MNIST-CIFAR", "n_train": 20, "n_val": 0, "n_test": 10, "seed": 0}


def _write_raw(root):
    from tests.sbengine.image_files import write_cifar10, write_mnist

    for train in (True, False):
        write_mnist(root, train=train, labels=np.tile(np.arange(10), 8))
    write_cifar10(root, train_labels=np.tile(np.arange(10), 8), test_labels=np.tile(np.arange(10), 4))


def test_missing_raw_data_is_a_422_naming_files_and_the_operator_setting(client, auth, settings):
    body = problem(client.post("/v1/datasets", json=REQUEST, headers=auth), 422)
    detail = body["detail"]
    assert body["errors"][0]["field"] == "body.preset"
    assert "SBAUDIT_RAW_DATA_DIR" in detail and "SBAUDIT_DOWNLOAD_RAW_DATA" in detail
    assert "MNIST/raw/train-images-idx3-ubyte" in detail and "test_batch" in detail
    assert str(settings.data_dir) not in detail, "no server path in the answer"
    assert len(body["missing"]) == 10
    assert client.get("/v1/jobs", headers=auth).json()["data"] == [], "nothing may be queued"
    assert client.get("/v1/datasets", headers=auth).json()["data"] == [], "no dataset row"


def test_present_files_or_downloads_allowed_are_accepted(client, auth, app, settings):
    _write_raw(raw_data.raw_data_dir(settings))
    assert raw_data.missing_files(raw_data.raw_data_dir(settings)) == []
    assert client.post("/v1/datasets", json=REQUEST, headers=auth).status_code == 202
    shutil.rmtree(raw_data.raw_data_dir(settings))
    app.state.settings = settings.model_copy(update={"download_raw_data": True})
    assert client.post("/v1/datasets", json={**REQUEST, "seed": 1}, headers=auth).status_code == 202


def test_a_job_finding_the_files_gone_fails_with_a_clear_reason(client, auth, db, settings):
    _write_raw(raw_data.raw_data_dir(settings))
    created = client.post("/v1/datasets", json=REQUEST, headers=auth).json()
    shutil.rmtree(raw_data.raw_data_dir(settings) / "cifar-10-batches-py")
    cpu = settings.model_copy(update={"device": "cpu"})
    assert run_job(created["job_id"], settings=cpu, db=db) == "failed"
    error = client.get(f"/v1/jobs/{created['job_id']}", headers=auth).json()["error"]
    assert error.startswith("CIFAR-10 training files are not on this server"), error
    assert "internal" not in error and str(settings.data_dir) not in error and "SBAUDIT_RAW_DATA_DIR" in error


def test_the_service_lists_the_files_the_engine_reads(tmp_path):
    from sbengine.data.images import RawDataMissing, load_cifar10, load_mnist

    _write_raw(tmp_path)
    required = [f"{folder}/{name}" for folder, (names, _) in raw_data.REQUIRED.items() for name in names]
    for relative in required:
        (tmp_path / relative).unlink()
        with pytest.raises(RawDataMissing, match=relative.rsplit("/", 1)[1]):
            loader = load_mnist if relative.startswith("MNIST") else load_cifar10
            train = "t10k" not in relative and "test_batch" not in relative
            loader(tmp_path, train=train, download=False)
        _write_raw(tmp_path)
