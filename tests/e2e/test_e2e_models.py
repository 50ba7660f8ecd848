"""Models from anywhere, against a real `sbaudit serve`: each is uploaded over HTTP, audited by the service's
workers, and gives the randomization AUC of the same network audited natively (the same weights as the
engine's torch module, ``run_audit`` in this process, same seed):

- a registry FCN exported to ONNX by both of torch's exporters;
- a torchvision resnet18 at 64x64, exported to ONNX by both exporters and as a state_dict uploaded with
  ``{"name": "torchvision", "model": "resnet18"}``;
- a timm network by name;
- a scikit-learn gradient-boosted classifier through skl2onnx, which runs in onnxruntime (forward only):
  its pgd request is refused with a 422 naming the check and the operator.

Small on purpose (2 CPU cores): a 48-row image split, one randomization repeat for the vision networks.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from e2e_flows import check_artifact, create, ready

from sbclient.cli.entry import main

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

AUC_TOLERANCE = 1e-3
FCN = {"name": "fcn", "width": 20, "depth": 1}
IMAGE = (3, 64, 64)


def _upload(client, data: bytes, filename: str, **fields) -> dict:
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    response = client.post(
        "/v1/models/uploads", data=form, files={"file": (filename, data, "application/octet-stream")}
    )
    assert response.status_code == 201, response.text
    return response.json()


def _dataset(client, tmp_path: Path, x: np.ndarray, y: np.ndarray, blocks: list[dict]) -> tuple[str, object]:
    """Upload (x, y) (every row in the test split) and load back exactly what the service stored."""
    from sbengine.data import Dataset

    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    response = client.post(
        "/v1/datasets/uploads",
        data={"blocks": json.dumps(blocks)},
        files={"file": ("data.npz", buffer.getvalue(), "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    directory = tmp_path / dataset["id"]
    directory.mkdir()
    names = {"arrays": "arrays.npz", "description": "dataset.json"}
    for artifact in dataset["artifacts"]:
        (directory / names[artifact["kind"]]).write_bytes(check_artifact(client, artifact))
    return dataset["id"], Dataset.load(directory)


def _audited_auc(client, model_id: str, dataset_id: str, audit: dict) -> float:
    created = create(client, "/v1/audits", {"model_id": model_id, "dataset_id": dataset_id, **audit})
    return float(ready(client, "audits", created)["results"]["randomization"]["auc"])


def _native_auc(module, dataset, audit: dict) -> float:
    from sbengine.audit import run_audit

    out = run_audit(
        module.eval(), dataset, checks=audit["checks"], repeats=audit["repeats"], seed=audit["seed"]
    )
    return float(out["results"]["randomization"]["auc"])


def _onnx_bytes(module, shape: tuple[int, ...], *, dynamo: bool) -> bytes:
    """What a user's ``torch.onnx.export`` writes, batch dimension left open, weights inside the file."""
    x = torch.zeros((2, *shape))
    path = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                module, (x,), dynamo=True, external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )  # fmt: skip
            program.save(path, external_data=False)
        else:
            torch.onnx.export(
                module, (x,), path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
            )
    return path.getvalue()


@pytest.fixture(scope="module")
def vectors(embedded, tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 10)).astype(np.float32)
    x[:, 0] += 2 * (2 * y - 1)
    x[:, 1:] += 0.5 * (2 * y - 1)[:, None]
    blocks = [{"name": "feature 0", "indices": [0]}, {"name": "rest", "indices": list(range(1, 10))}]
    with embedded.client() as client:
        return (x, y), _dataset(client, tmp_path_factory.mktemp("vectors"), x, y, blocks)


@pytest.fixture(scope="module")
def images(embedded, tmp_path_factory):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 48)
    x = rng.uniform(0, 1, size=(48, *IMAGE)).astype(np.float32)
    x[:, :, :32] += 0.5 * (2 * y - 1)[:, None, None, None]
    blocks = [{"name": "top", "rows": [0, 32]}, {"name": "bottom", "rows": [32, 64]}]
    with embedded.client() as client:
        return _dataset(client, tmp_path_factory.mktemp("images"), x, y, blocks)


def test_a_registry_fcn_exported_to_onnx_audits_like_the_fcn(embedded, vectors):
    from sbengine.models import build_model

    _, (dataset_id, dataset) = vectors
    torch.manual_seed(0)
    fcn = build_model(FCN, input_shape=(10,), num_classes=2).eval()
    audit = {"checks": ["randomization"], "repeats": 2, "seed": 7}
    native = _native_auc(fcn, dataset, audit)
    with embedded.client() as client:
        for dynamo in (False, True):
            model = _upload(client, _onnx_bytes(fcn, (10,), dynamo=dynamo), "fcn.onnx", dataset_id=dataset_id)
            assert model["architecture"]["name"] == "onnx" and model["input_shape"] == [10]
            assert model["capabilities"]["gradients"] is True and model["capabilities"]["runtime"] == "torch"
            assert model["num_classes"] == 2 and model["result"]["cost"]["macs"] == 10 * 20 + 20 * 2
            assert abs(_audited_auc(client, model["id"], dataset_id, audit) - native) <= AUC_TOLERANCE, dynamo


def test_torchvision_resnet18_as_onnx_and_as_a_state_dict_audits_like_resnet18(embedded, images, tmp_path):
    import torchvision
    from safetensors.torch import save

    dataset_id, dataset = images
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=2).eval()
    audit = {"checks": ["randomization"], "repeats": 1, "seed": 3}
    native = _native_auc(resnet, dataset, audit)
    with embedded.client() as client:
        uploads = [
            _upload(client, _onnx_bytes(resnet, IMAGE, dynamo=dynamo), "resnet18.onnx", dataset_id=dataset_id)
            for dynamo in (False, True)
        ]
        state = save({k: v.contiguous() for k, v in resnet.state_dict().items()})
        by_name = _upload(
            client, state, "resnet18.safetensors", dataset_id=dataset_id,
            architecture={"name": "torchvision", "model": "resnet18"},
        )  # fmt: skip
        assert by_name["architecture"] == {"name": "torchvision", "model": "resnet18"}
        assert by_name["input_shape"] == list(IMAGE), "any image size, not only multiples of 32"
        assert by_name["result"]["cost"]["parameters"] == sum(p.numel() for p in resnet.parameters())
        for model in [*uploads, by_name]:
            assert model["capabilities"]["gradients"] is True
            assert abs(_audited_auc(client, model["id"], dataset_id, audit) - native) <= AUC_TOLERANCE
        # The same state_dict through the CLI, saved with torch.save: the same model declaration.
        path = tmp_path / "resnet18.pt"
        torch.save(resnet.state_dict(), path)
        architecture = json.dumps({"name": "torchvision", "model": "resnet18"})
        assert main(["models", "upload", str(path), "--url", embedded.base_url, "--key", embedded.key,
                     "--architecture", architecture, "--dataset-id", dataset_id]) == 0  # fmt: skip


def test_a_timm_model_by_name_audits_like_the_timm_module(embedded, images):
    import timm
    from safetensors.torch import save

    dataset_id, dataset = images
    torch.manual_seed(0)
    network = timm.create_model("test_resnet", pretrained=False, num_classes=2).eval()
    audit = {"checks": ["randomization", "pgd"], "repeats": 1, "seed": 5,
             "options": {"pgd": {"eps": 0.5, "step_size": 0.25, "steps": 2}}}  # fmt: skip
    native = _native_auc(network, dataset, {**audit, "checks": ["randomization"]})
    with embedded.client() as client:
        state = save({k: v.contiguous() for k, v in network.state_dict().items()})
        model = _upload(
            client, state, "test_resnet.safetensors", dataset_id=dataset_id,
            architecture={"name": "timm", "model": "test_resnet"},
        )  # fmt: skip
        assert model["result"]["cost"]["macs"] > 0
        created = create(client, "/v1/audits", {"model_id": model["id"], **audit})
        results = ready(client, "audits", created)["results"]
        assert abs(results["randomization"]["auc"] - native) <= AUC_TOLERANCE
        assert "pgd" in results, "a timm module is differentiable: gradient checks run"


def test_a_scikit_learn_model_runs_forward_only_and_refuses_gradient_checks(embedded, vectors):
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    (x, y), (dataset_id, dataset) = vectors
    classifier = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(x, y)
    graph = to_onnx(classifier, x[:1], options={id(classifier): {"zipmap": False}}, target_opset=17)

    class Native(torch.nn.Module):
        """scikit-learn's own predict_proba as the engine's logits (log-probabilities), in this process."""

        def forward(self, inputs):
            p = classifier.predict_proba(inputs.detach().cpu().double().numpy())
            return torch.log(torch.as_tensor(p, dtype=torch.float32).clamp_min(1e-12))

    audit = {"checks": ["randomization", "feature_dependence"], "repeats": 2, "seed": 1}
    native = _native_auc(Native(), dataset, {**audit, "checks": ["randomization"]})
    with embedded.client() as client:
        model = _upload(client, graph.SerializeToString(), "trees.onnx", dataset_id=dataset_id, name="trees")
        capabilities = model["capabilities"]
        assert capabilities["gradients"] is False and capabilities["runtime"] == "onnxruntime"
        assert capabilities["blocked_by"] == ["ai.onnx.ml.TreeEnsembleClassifier"]
        assert model["architecture"]["probabilities"] is True
        created = create(client, "/v1/audits", {"model_id": model["id"], **audit})
        results = ready(client, "audits", created)["results"]
        assert abs(results["randomization"]["auc"] - native) <= AUC_TOLERANCE
        assert results["randomization"]["auc"] > 0.9 and "feature_dependence" in results

        refused = client.post(
            "/v1/audits", json={"model_id": model["id"], "checks": ["randomization", "pgd"]}
        )
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert "pgd" in detail and "TreeEnsembleClassifier" in detail and "onnxruntime" in detail

        listing = client.get("/v1/architectures").json()["data"]
        names = {entry["name"]: entry for entry in listing}
        assert {"fcn", "resnet18", "torchvision", "timm", "onnx"} <= set(names)
        assert "resnet18" in names["torchvision"]["models"] and names["timm"]["trainable"] is True
        assert "Conv" in names["onnx"]["models"] and "width" in names["fcn"]["options"]
