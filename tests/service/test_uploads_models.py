"""POST /v1/models/uploads: checkpoints become models; hostile files get a 4xx, run nothing, leave nothing.

Each accepted or content-checked upload starts the validator process (it imports torch: seconds), so the
cases that need it are few; everything the API can refuse from the form or the file's framing is checked
without it.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import warnings
import zipfile

import pytest
from service_testing import LMS5_DESCRIPTION, fields, problem
from upload_testing import (
    CreatesFile,
    assert_nothing_left,
    fcn_state,
    raw_pickle_bytes,
    safetensors_bytes,
    stored_files,
    torch_bytes,
    upload_model,
)

from service.settings import Settings

torch = pytest.importorskip("torch")


@pytest.fixture
def settings(tmp_path, clean_env) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_upload_bytes=64 << 10)


def test_a_safetensors_checkpoint_becomes_a_ready_model_once(client, auth, settings, ready_dataset):
    dataset_id = ready_dataset()
    data = safetensors_bytes(fcn_state())
    response = upload_model(
        client, auth, data, dataset_id=dataset_id, input_shape=None, num_classes=None, name="mine"
    )
    assert response.status_code == 201, response.text
    model = response.json()
    assert response.headers["location"] == f"/v1/models/{model['id']}"
    assert model["status"] == "ready" and model["name"] == "mine" and model["dataset_id"] == dataset_id
    assert model["input_shape"] == [50] and model["num_classes"] == 2, "taken from the dataset"
    assert model["architecture"]["activation"] == "relu", "the resolved architecture is stored"
    assert model["result"]["source"] == "upload" and model["result"]["format"] == "safetensors"
    assert model["result"]["parameters"] == 20 * 50 + 20 + 2 * 20 + 2
    [weights] = model["artifacts"]
    assert weights["kind"] == "weights" and weights["filename"] == f"{model['id']}.safetensors"
    assert client.get(weights["url"], headers=auth).content == data, "canonical safetensors, stored as sent"
    job = client.get(f"/v1/jobs/{model['job_id']}", headers=auth).json()
    assert job["kind"] == "upload_model" and job["state"] == "succeeded" and job["progress"] == 1.0

    again = upload_model(client, auth, data, dataset_id=dataset_id, input_shape=None, num_classes=None)
    assert again.status_code == 200 and again.json()["id"] == model["id"], "same bytes, same owner"
    assert [m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]] == [model["id"]]
    assert_nothing_left(settings, stored_files(settings))


def test_a_torch_state_dict_is_stored_as_canonical_safetensors(client, auth, settings):
    state = fcn_state(seed=3)
    response = upload_model(client, auth, torch_bytes(state), filename="model.pt")
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["result"]["format"] == "pytorch"
    weights = client.get(model["artifacts"][0]["url"], headers=auth).content
    assert weights == safetensors_bytes(state), "the same tensors, now as safetensors"
    assert_nothing_left(settings, stored_files(settings))
    audit = client.post("/v1/audits", headers=auth, json={"model_id": model["id"]})
    assert audit.status_code == 422 and "without a dataset" in audit.text
    assert "body.dataset_id" in audit.text


def test_a_pickle_never_runs(client, auth, settings, tmp_path):
    target = tmp_path / "created-by-unpickling"
    control = tmp_path / "control"
    pickle.loads(raw_pickle_bytes(control))["layers.0.weight"].close()  # what a careless loader does
    assert control.exists(), "the payload works"
    before = stored_files(settings)

    # A plain pickle (torch.save's legacy format) is refused from its first bytes.
    body = problem(upload_model(client, auth, raw_pickle_bytes(target), filename="model.pt"), 422)
    assert "pickle" in body["detail"] and body["errors"][0]["field"] == "body.file"
    assert not target.exists()
    assert_nothing_left(settings, before)

    # In torch's zip format it reaches torch.load(weights_only=True), which refuses the global.
    evil = torch_bytes({"layers.0.weight": CreatesFile(target)})
    body = problem(upload_model(client, auth, evil, filename="model.pt"), 422)
    assert "weights_only" in body["detail"] and "open" in body["detail"], body["detail"]
    assert not target.exists()
    assert_nothing_left(settings, before)


def test_weights_that_do_not_fit_the_architecture_are_named(client, auth, settings):
    state = fcn_state()
    state["layers.0.weight"] = torch.zeros(20, 49)
    del state["layers.2.bias"]
    state["head.extra"] = torch.zeros(3)
    before = stored_files(settings)
    body = problem(upload_model(client, auth, safetensors_bytes(state)), 422)
    assert "first mismatch 'layers.0.weight' has shape (20, 49), expected (20, 50)" in body["detail"]
    assert "missing: 'layers.2.bias'" in body["detail"] and "unexpected: 'head.extra'" in body["detail"]
    assert body["mismatched"] == [{"name": "layers.0.weight", "shape": [20, 49], "expected": [20, 50]}]
    assert body["missing"] == ["layers.2.bias"] and body["unexpected"] == ["head.extra"]
    assert_nothing_left(settings, before)


def test_non_finite_weights_are_refused(client, auth, settings):
    state = fcn_state()
    state["layers.0.bias"][3] = float("nan")
    before = stored_files(settings)
    body = problem(upload_model(client, auth, safetensors_bytes(state)), 422)
    assert "'layers.0.bias' contains NaN" in body["detail"]
    assert_nothing_left(settings, before)


def _header_claiming(shape: list[int]) -> bytes:
    header = json.dumps(
        {"layers.0.weight": {"dtype": "F32", "shape": shape, "data_offsets": [0, 16]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + bytes(16)


def _torchscript_bytes() -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; users still have such files
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    return buffer.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_broken_files_are_refused_before_any_reader_runs(client, auth, settings):
    good = safetensors_bytes(fcn_state())
    before = stored_files(settings)
    cases = {
        "truncated": good[: len(good) - 100],
        "absurd header length": struct.pack("<Q", 2**60) + good[8:],
        "absurd shape": _header_claiming([2**31, 2**31]),
        "not a checkpoint": b"hello, world",
        "a lone .npy": b"\x93NUMPY\x01\x00" + bytes(100),
        "TorchScript": _torchscript_bytes(),
        "a zip of something else": _zip_bytes({"x.npy": bytes(10)}),
    }
    for case, data in cases.items():
        body = problem(upload_model(client, auth, data), 422)
        assert body["errors"][0]["field"] == "body.file", case
        assert_nothing_left(settings, before)


def test_a_file_over_the_limit_is_refused_while_streaming(client, auth, settings):
    before = stored_files(settings)
    body = problem(upload_model(client, auth, bytes(settings.max_upload_bytes + 1)), 413)
    assert str(settings.max_upload_bytes) in body["detail"]
    assert_nothing_left(settings, before)
    declared = client.post(
        "/v1/models/uploads",
        headers={**auth, "Content-Type": "multipart/form-data; boundary=xyz", "Content-Length": str(10**12)},
        content=b"--xyz--\r\n",
    )
    problem(declared, 413)
    assert_nothing_left(settings, before)


def test_path_like_file_names_are_refused(client, auth, settings):
    good = safetensors_bytes(fcn_state())
    before = stored_files(settings)
    for name in ("../../model.safetensors", "/etc/passwd", "..\\..\\model.pt", "models/model.pt"):
        body = problem(upload_model(client, auth, good, filename=name), 422)
        assert "plain file name" in body["detail"], name
        assert_nothing_left(settings, before)


def test_form_errors_name_the_field(client, auth, settings, ready_dataset):
    good = safetensors_bytes(fcn_state())
    narrow = ready_dataset(description={**LMS5_DESCRIPTION, "input_shape": [20]})
    cases = [
        ({"architecture": None}, "body.architecture"),
        ({"architecture": {"name": "fcn", "width": 0}}, "body.architecture.width"),
        ({"architecture": {"name": "fcn", "width": 10**6}}, "body.architecture.width"),
        ({"architecture": "{not json"}, "body.architecture"),
        ({"architecture": {"name": "resnet18"}}, "body.input_shape"),
        ({"input_shape": None}, "body.input_shape"),
        ({"input_shape": "[0]"}, "body.input_shape.0"),
        ({"num_classes": "two"}, "body.num_classes"),
        ({"normalization": {"mean": [0, 0], "std": [1]}}, "body.normalization"),
        ({"normalization": {"mean": [0], "std": [0]}}, "body.normalization.std.0"),
        ({"dataset_id": narrow}, "body.input_shape"),
        ({"colour": "blue"}, "body.colour"),
    ]
    before = stored_files(settings)
    for form, field in cases:
        assert field in fields(upload_model(client, auth, good, **form)), form
    problem(upload_model(client, auth, good, dataset_id="ds_AAAAAAAAAAAAAAAA"), 404)
    no_file = client.post(
        "/v1/models/uploads", headers=auth, data={"architecture": "{}"}, files={"name": (None, "x")}
    )
    assert "body.file" in fields(no_file)
    problem(client.post("/v1/models/uploads", headers=auth, json={"architecture": {"name": "fcn"}}), 415)
    problem(upload_model(client, {}, good), 401)
    assert_nothing_left(settings, before)


def test_another_owners_dataset_is_not_found(client, auth, other_auth, settings, ready_dataset):
    dataset_id = ready_dataset("alice")
    problem(upload_model(client, other_auth, safetensors_bytes(fcn_state()), dataset_id=dataset_id), 404)
    assert_nothing_left(settings, set())


def test_only_the_upload_routes_stream_multipart_bodies(client, auth, settings):
    """Elsewhere a multipart body is held to the JSON limit, like any other body."""
    headers = {**auth, "Content-Type": "multipart/form-data; boundary=xyz"}
    body = problem(
        client.post("/v1/datasets", headers=headers, content=bytes(settings.max_json_bytes + 1)), 413
    )
    assert "request body exceeds" in body["detail"]
