"""POST /v1/models/uploads with an ONNX graph (no architecture): a graph from any framework becomes a model;
hostile graphs (external data, custom operators, a million nodes, a 2 GB tensor claim, shape computations
that loop) get a clear 4xx and leave nothing behind.

Graphs are built with onnx.helper, so each case is exactly the hostile construction it names.
"""

from __future__ import annotations

import numpy as np
import pytest
from upload_testing import assert_nothing_left, stored_files, upload

from service.settings import Settings

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROUTE = "/v1/models/uploads"


@pytest.fixture
def settings(tmp_path, clean_env) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_upload_bytes=64 << 20)


def _linear(features: int = 4, classes: int = 3, *, batch: str | int = "N", opset: int = 17, **extra):
    """x @ W + b, then Relu: a graph every checker and runtime accepts."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(classes,)).astype(np.float32), "b")
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["z"]), helper.make_node("Relu", ["z"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])],
        [weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8, **extra)


def _bytes(model) -> bytes:
    return model.SerializeToString()


def _refused(client, auth, settings, data: bytes, *, status: int = 422, **fields) -> str:
    before = stored_files(settings)
    response = upload(client, auth, ROUTE, data, filename="model.onnx", **fields)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert_nothing_left(settings, before)
    assert client.get("/v1/models", headers=auth).json()["data"] == [], "no row left behind"
    return str(response.json()["detail"])


def test_a_graph_becomes_a_differentiable_model_with_its_own_shape_and_classes(client, auth, settings):
    data = _bytes(_linear())
    response = upload(client, auth, ROUTE, data, filename="linear.onnx", name="linear")
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["input_shape"] == [4] and model["num_classes"] == 3, "from the graph's signature"
    assert model["architecture"]["name"] == "onnx" and model["architecture"]["runtime"] == "torch"
    assert model["capabilities"] == {"gradients": True, "runtime": "torch", "blocked_by": [], "reason": None}
    assert model["result"]["format"] == "onnx" and model["result"]["cost"]["macs"] == 12
    assert model["result"]["operators"] == ["Gemm", "Relu"]
    [weights] = model["artifacts"]
    assert weights["filename"].endswith(".onnx")
    assert client.get(weights["url"], headers=auth).content == data, "stored as sent"
    again = upload(client, auth, ROUTE, data, filename="linear.onnx")
    assert again.status_code == 200 and again.json()["id"] == model["id"]


def test_open_dimensions_come_from_the_form_and_must_agree_with_it(client, auth, settings):
    open_graph = _linear()
    open_graph.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    detail = _refused(client, auth, settings, _bytes(open_graph))
    assert "declare input_shape" in detail
    response = upload(client, auth, ROUTE, _bytes(open_graph), filename="m.onnx", input_shape=[4])
    assert response.status_code == 201, response.text
    assert response.json()["input_shape"] == [4]
    wrong = upload(client, auth, ROUTE, _bytes(_linear()), filename="m.onnx", input_shape=[5])
    assert wrong.status_code == 422 and "body.input_shape" in wrong.text
    classes = upload(client, auth, ROUTE, _bytes(_linear()), filename="m.onnx", num_classes=2)
    assert classes.status_code == 422 and "has 3 classes, declared 2" in classes.text


def test_a_fixed_batch_graph_runs_on_any_batch(client, auth, settings):
    response = upload(client, auth, ROUTE, _bytes(_linear(batch=1)), filename="m.onnx")
    assert response.status_code == 201, response.text
    assert response.json()["architecture"]["batch"] == 1


def test_external_data_is_refused(client, auth, settings):
    model = _linear()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="/etc/passwd")
    detail = _refused(client, auth, settings, _bytes(model))
    assert "external data" in detail and "external_data=False" in detail


def test_a_custom_operator_domain_is_refused(client, auth, settings):
    model = _linear()
    model.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    model.graph.node.append(helper.make_node("Backdoor", ["y"], ["y2"], domain="com.example.evil"))
    detail = _refused(client, auth, settings, _bytes(model))
    assert "com.example.evil" in detail and "custom operators" in detail


def test_a_million_nodes_are_refused(client, auth, settings):
    model = _linear()
    chain = [helper.make_node("Identity", [f"i{k}"], [f"i{k + 1}"]) for k in range(1_000_000)]
    model.graph.node.extend(chain)
    detail = _refused(client, auth, settings, _bytes(model))
    assert "1,000,002 nodes (at most 100,000)" in detail


def test_a_two_gigabyte_initializer_claim_is_refused_before_allocating(client, auth, settings):
    model = _linear()
    huge = model.graph.initializer.add(name="huge", data_type=TensorProto.FLOAT, raw_data=b"\x00" * 16)
    huge.dims.append(1 << 29)
    detail = _refused(client, auth, settings, _bytes(model))
    assert "declares (536870912,) (2,147,483,648 bytes) but carries 16 bytes" in detail


def test_shape_computations_that_loop_are_refused(client, auth, settings):
    """A Loop running 2**62 times over a Shape computation, and a cycle of shape nodes feeding each other."""
    model = _linear()
    body = helper.make_graph(
        [helper.make_node("Shape", ["carried"], ["shape"]), helper.make_node("Identity", ["cond"], ["c"]),
         helper.make_node("Identity", ["carried"], ["carried_out"])],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, None)],
    )  # fmt: skip
    trips = numpy_helper.from_array(np.array(1 << 62, dtype=np.int64), "trips")
    true = numpy_helper.from_array(np.array(True), "true")
    model.graph.initializer.extend([trips, true])
    model.graph.node.append(helper.make_node("Loop", ["trips", "true", "x"], ["looped"], body=body))
    detail = _refused(client, auth, settings, _bytes(model))
    assert "control flow (Loop) is not supported" in detail

    cyclic = _linear()
    cyclic.graph.node.extend(
        [
            helper.make_node("Shape", ["r2"], ["s1"]),
            helper.make_node("Reshape", ["x", "s1"], ["r2"]),
        ]
    )
    detail = _refused(client, auth, settings, _bytes(cyclic))
    assert "ONNX checker refuses the graph" in detail and "topologically sorted" in detail


def test_files_that_are_not_graphs_are_refused(client, auth, settings):
    detail = _refused(client, auth, settings, b"\x08\x07" + b"not a graph" * 10)
    assert "not an ONNX model" in detail
    detail = _refused(client, auth, settings, _bytes(_linear(opset=5)))
    assert "opset 5 is outside the supported range" in detail


def test_a_graph_of_ai_onnx_ml_operators_only_needs_no_standard_opset(client, auth, settings):
    """onnxmltools' XGBoost and LightGBM graphs import ai.onnx.ml alone: forward only, not 'opset 0'."""
    node = helper.make_node(
        "LinearClassifier",
        ["x"],
        ["label", "scores"],
        domain="ai.onnx.ml",
        coefficients=[1.0, -1.0, 0.5, -0.5, 0.25, -0.25],
        intercepts=[0.0, 0.1],
        classlabels_ints=[0, 1],
    )
    graph = helper.make_graph(
        [node],
        "ml-only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2]),
        ],
    )
    relu = helper.make_node("Relu", ["x"], ["y"])
    standard_without_import = helper.make_model(
        helper.make_graph(
            [relu],
            "relu",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        ),
        opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)],
        ir_version=8,
    )
    detail = _refused(client, auth, settings, _bytes(standard_without_import))
    assert "imports no standard opset" in detail
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)], ir_version=8)
    response = upload(client, auth, ROUTE, _bytes(model), filename="ml.onnx")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["input_shape"] == [3] and body["num_classes"] == 2
    assert body["capabilities"]["runtime"] == "onnxruntime"
    assert body["capabilities"]["blocked_by"] == ["ai.onnx.ml.LinearClassifier"]


def test_models_without_a_formula_are_budgeted_on_their_measured_cost(client, auth):
    """The validator measures what the service cannot compute without torch; audits are budgeted on it
    (training a library architecture by name: tests/service/test_train_library.py)."""
    from service.estimates import model_cost
    from service.models import Model

    response = upload(client, auth, ROUTE, _bytes(_linear(features=6, classes=2)), filename="m.onnx")
    assert response.status_code == 201, response.text
    measured = response.json()["result"]["cost"]
    assert measured == {
        "parameters": 6 * 2 + 2,
        "buffers": 0,
        "macs": 12,
        "activations": measured["activations"],
    }
    row = Model(architecture=response.json()["architecture"], input_shape=[6], num_classes=2,
                result=response.json()["result"])  # fmt: skip
    assert model_cost(row).macs == 12 and model_cost(row).parameters == 14


def test_normalization_must_fit_the_graphs_own_input_shape(client, auth, settings):
    detail = _refused(
        client, auth, settings, _bytes(_linear()), normalization={"mean": [0, 0], "std": [1, 1]}
    )
    assert "normalization needs 1 or 4 values" in detail
    fits = upload(client, auth, ROUTE, _bytes(_linear()), filename="m.onnx",
                  normalization={"mean": [0.5], "std": [2.0]})  # fmt: skip
    assert fits.status_code == 201, fits.text
    assert fits.json()["result"]["normalization"] == {"mean": [0.5], "std": [2.0]}


def test_library_architectures_are_checked_before_the_validator(client, auth, settings):
    """Form-level refusals for torchvision/timm names: the shape they read, options fetching weights."""
    before = stored_files(settings)
    for architecture, input_shape, field, words in [
        ({"name": "torchvision", "model": "resnet18"}, [50], "body.input_shape", "(C, H, W) images"),
        ({"name": "timm", "model": "resnet18", "pretrained": True}, [3, 64, 64], "body.architecture",
         "'pretrained' is not allowed"),
        ({"name": "torchvision", "model": "resnet18", "layers": [1, 2]}, [3, 64, 64], "body.architecture",
         "must be a number, string, boolean or null"),
    ]:  # fmt: skip
        response = upload(client, auth, ROUTE, b"x" * 64, filename="w.safetensors",
                          architecture=architecture, input_shape=input_shape, num_classes=2)  # fmt: skip
        assert response.status_code == 422 and field in response.text and words in response.text, (
            response.text
        )
    assert_nothing_left(settings, before)
