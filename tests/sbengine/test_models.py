"""The model zoo builds what docs/method.md §4 describes, and bad configs fail early with a clear message."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sbengine.models import ARCHITECTURES, architecture_kwargs, build_model, resolve_architecture

VECTOR = [name for name, arch in ARCHITECTURES.items() if arch.input == "vector"]
IMAGE = [name for name, arch in ARCHITECTURES.items() if arch.input == "image"]


def fcn(input_shape=(50,), num_classes=2, **options) -> nn.Module:
    return build_model({"name": "fcn", **options}, input_shape=input_shape, num_classes=num_classes)


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


# ---- every architecture builds and returns (batch, num_classes) ----


@pytest.mark.parametrize("num_classes", [2, 10])
@pytest.mark.parametrize("name", VECTOR)
def test_vector_models_output_shape(name, num_classes):
    model = build_model({"name": name}, input_shape=(50,), num_classes=num_classes)
    assert model(torch.randn(4, 50)).shape == (4, num_classes)


@pytest.mark.parametrize("name", IMAGE)
def test_vision_models_output_shape(name):
    """Binary MNIST-CIFAR (3x64x32) and CIFAR-sized (3x32x32) inputs through one real model."""
    model = build_model({"name": name}, input_shape=(3, 64, 32), num_classes=2).eval()
    with torch.no_grad():
        for shape in [(3, 64, 32), (3, 32, 32)]:
            assert model(torch.randn(2, *shape)).shape == (2, 2)


@pytest.mark.parametrize("name", IMAGE)
def test_vision_models_ten_classes(name):
    """On the meta device (shapes only, no parameter init or arithmetic), which keeps the VGGs' 100M-weight
    heads from dominating the test time; real numerics are covered by the binary test above."""
    with torch.device("meta"):
        model = build_model({"name": name}, input_shape=(3, 32, 32), num_classes=10).eval()
        assert model(torch.empty(2, 3, 32, 32)).shape == (2, 10)


def test_fcn_trains_on_images_by_flattening():
    model = fcn(input_shape=(3, 64, 32), width=8, depth=1)
    assert linears(model)[0].in_features == 3 * 64 * 32
    assert model(torch.randn(2, 3, 64, 32)).shape == (2, 2)


def test_architecture_table_matches_kwargs():
    assert architecture_kwargs("fcn") == {
        "width": 100,
        "depth": 2,
        "activation": "relu",
        "dropout": 0.0,
        "input_dropout": 0.0,
        "batch_norm": False,
        "init": "default",
        "init_scale": 1.0,
    }
    assert architecture_kwargs("resnet50") == {}
    assert resolve_architecture({"name": "gru", "hidden": 20}) == {
        "name": "gru",
        "hidden": 20,
        "step_features": 10,
        "layers": 1,
        "many_to_many": False,
    }


# ---- vision stems (docs/method.md §4.3) ----


def test_googlenet_honours_num_classes():
    model = build_model({"name": "googlenet"}, input_shape=(3, 32, 32), num_classes=2)
    assert model.fc.out_features == 2
    assert model.conv1.conv.kernel_size == (3, 3) and model.conv1.conv.out_channels == 192
    assert model.aux1 is None and model.aux2 is None
    model.train()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)  # a plain tensor in train mode too


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_stem_is_3x3_stride_1(name):
    conv1 = build_model({"name": name}, input_shape=(3, 32, 32), num_classes=2).conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.padding == (1, 1)
    assert conv1.bias is None


def test_mobilenet_v2_cifar_strides():
    model = build_model({"name": "mobilenet_v2"}, input_shape=(3, 32, 32), num_classes=2)
    assert model.features[0][0].stride == (1, 1)
    # features[2:4] are the second stage's two blocks (t=6, c=24, n=2, s=1).
    second_stage_first_block = model.features[2].conv[1][0]
    assert model.features[2].out_channels == 24 and second_stage_first_block.stride == (1, 1)


def test_densenet_stem_is_3x3_stride_1():
    conv0 = build_model({"name": "densenet121"}, input_shape=(3, 32, 32), num_classes=2).features.conv0
    assert conv0.kernel_size == (3, 3) and conv0.stride == (1, 1)


# ---- FCN structure and initialisation (docs/method.md §4.1) ----


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_fcn_layers_and_widths(depth):
    layers = linears(fcn(width=30, depth=depth, num_classes=3))
    assert len(layers) == depth + 1
    assert [(m.in_features, m.out_features) for m in layers] == [(50, 30)] + [(30, 30)] * (depth - 1) + [
        (30, 3)
    ]


@pytest.mark.parametrize(
    ("activation", "module"),
    [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("prelu", nn.PReLU), ("tanh", nn.Tanh)],
)
def test_fcn_activation(activation, module):
    model = fcn(depth=2, activation=activation)
    assert sum(isinstance(m, module) for m in model.modules()) == 2


def test_fcn_layer_order_with_dropout_and_batch_norm():
    model = fcn(width=16, depth=2, dropout=0.3, input_dropout=0.1, batch_norm=True)
    kinds = [type(m) for m in model.layers]
    hidden = [nn.Linear, nn.ReLU, nn.Dropout, nn.BatchNorm1d]
    assert kinds == [nn.Dropout, *hidden, *hidden, nn.Linear]
    assert model.layers[0].p == 0.1 and model.layers[3].p == 0.3
    assert model(torch.randn(4, 50)).shape == (4, 2)


def test_fcn_without_regularisers_has_no_dropout_or_batch_norm():
    kinds = {type(m) for m in fcn().modules()}
    assert nn.Dropout not in kinds and nn.BatchNorm1d not in kinds


@pytest.mark.parametrize("init", ["kaiming", "xavier"])
def test_fcn_normal_inits_zero_biases(init):
    model = fcn(width=200, init=init, activation="prelu")
    for layer in linears(model):
        assert torch.count_nonzero(layer.bias) == 0
    first = linears(model)[1].weight  # 200 x 200
    expected_std = (2 / (1 + 0.25**2) / 200) ** 0.5 if init == "kaiming" else (2 / 400) ** 0.5
    assert first.std().item() == pytest.approx(expected_std, rel=0.05)
    assert torch.isfinite(model(torch.randn(3, 50))).all()


@pytest.mark.parametrize("init", ["default", "kaiming"])
def test_fcn_init_scale_scales_weights(init):
    torch.manual_seed(0)
    base = fcn(init=init)
    torch.manual_seed(0)
    scaled = fcn(init=init, init_scale=0.5)
    for a, b in zip(linears(base), linears(scaled), strict=True):
        torch.testing.assert_close(b.weight, 0.5 * a.weight)
        torch.testing.assert_close(b.bias, a.bias)


# ---- sequence models (docs/method.md §4.2) ----


@pytest.mark.parametrize("layers", [1, 2])
def test_cnn1d_pool_flatten_size(layers):
    model = build_model({"name": "cnn1d", "pool": True, "layers": layers}, input_shape=(50,), num_classes=3)
    assert model.head[0].in_features == 32 * (50 // 3)
    assert model(torch.randn(2, 50)).shape == (2, 3)


def test_cnn1d_structure():
    model = build_model(
        {"name": "cnn1d", "filters": 8, "kernel": 5, "layers": 3}, input_shape=(20,), num_classes=2
    )
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == (
        [(1, 8, (5,), (2,))] + [(8, 8, (5,), (2,))] * 2
    )
    assert [(m.in_features, m.out_features) for m in linears(model)] == [(8 * 20, 20), (20, 2)]


@pytest.mark.parametrize("name", ["gru", "lstm"])
@pytest.mark.parametrize("many_to_many", [False, True])
def test_recurrent_models(name, many_to_many):
    config = {"name": name, "hidden": 12, "step_features": 5, "layers": 2, "many_to_many": many_to_many}
    model = build_model(config, input_shape=(50,), num_classes=3)
    assert model.rnn.input_size == 5 and model.rnn.num_layers == 2 and model.rnn.batch_first
    assert model.head.in_features == (12 * 10 if many_to_many else 12)
    assert model(torch.randn(2, 50)).shape == (2, 3)


# ---- validation ----


@pytest.mark.parametrize(
    ("architecture", "input_shape", "fragments"),
    [
        ({"name": "resnet99"}, (50,), ["unknown architecture 'resnet99'", "fcn", "resnet18"]),
        ({"width": 3}, (50,), ["'name'"]),
        ({"name": "fcn", "widht": 3}, (50,), ["fcn", "'widht'", "width", "depth"]),
        ({"name": "resnet18", "width": 3}, (3, 32, 32), ["resnet18", "'width'"]),
        ({"name": "fcn", "width": 0}, (50,), ["fcn: width must be an integer in [1, 65536], got 0"]),
        ({"name": "fcn", "width": 10.0}, (50,), ["width", "integer"]),
        ({"name": "fcn", "depth": True}, (50,), ["depth", "integer"]),
        ({"name": "fcn", "activation": "sigmoid"}, (50,), ["activation", "relu, leaky_relu, prelu, tanh"]),
        ({"name": "fcn", "dropout": 1.0}, (50,), ["dropout", "[0, 1)"]),
        ({"name": "fcn", "input_dropout": -0.1}, (50,), ["input_dropout", "[0, 1)"]),
        ({"name": "fcn", "batch_norm": "yes"}, (50,), ["batch_norm", "boolean"]),
        ({"name": "fcn", "init": "orthogonal"}, (50,), ["init", "default, kaiming, xavier"]),
        ({"name": "fcn", "init_scale": 0}, (50,), ["init_scale", "> 0"]),
        ({"name": "fcn", "init_scale": float("nan")}, (50,), ["init_scale"]),
        ({"name": "cnn1d", "kernel": 4}, (50,), ["kernel", "odd"]),
        ({"name": "cnn1d", "kernel": 1, "pool": True}, (50,), ["pool", "kernel"]),
        ({"name": "gru", "step_features": 7}, (50,), ["gru", "step_features", "50"]),
        ({"name": "lstm", "step_features": 3}, (50,), ["lstm", "step_features"]),
        ({"name": "gru"}, (3, 32, 32), ["gru", "input_shape"]),
        ({"name": "cnn1d"}, (1, 50), ["cnn1d", "input_shape"]),
        ({"name": "resnet18"}, (50,), ["resnet18", "input_shape"]),
        ({"name": "resnet18"}, (1, 32, 32), ["resnet18", "input_shape"]),
        ({"name": "vgg11_bn"}, (3, 28, 28), ["vgg11_bn", "input_shape"]),
        ({"name": "fcn"}, (), ["input_shape"]),
        ({"name": "fcn"}, (50, 0), ["input_shape"]),
    ],
)
def test_invalid_configs_raise_value_error_naming_the_key(architecture, input_shape, fragments):
    with pytest.raises(ValueError) as info:
        build_model(architecture, input_shape=input_shape, num_classes=2)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_invalid_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        fcn(num_classes=0)


def test_architecture_kwargs_unknown_name():
    with pytest.raises(ValueError, match="unknown architecture"):
        architecture_kwargs("resnet99")


def test_config_is_not_mutated_and_accepts_lists_and_integral_floats():
    config = {"name": "fcn", "width": 8, "init_scale": 2}
    model = build_model(config, input_shape=[50], num_classes=2)
    assert config == {"name": "fcn", "width": 8, "init_scale": 2}
    assert linears(model)[0].out_features == 8


# ---- determinism ----


@pytest.mark.parametrize(
    ("architecture", "input_shape"),
    [
        ({"name": "fcn", "init": "kaiming", "activation": "prelu"}, (50,)),
        ({"name": "cnn1d", "pool": True}, (50,)),
        ({"name": "lstm"}, (50,)),
        ({"name": "resnet18"}, (3, 32, 32)),
        ({"name": "mobilenet_v2"}, (3, 32, 32)),
    ],
)
def test_same_seed_same_parameters(architecture, input_shape):
    def state(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(architecture, input_shape=input_shape, num_classes=2).state_dict()

    first, second, other = state(0), state(0), state(1)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_vision_names_match_the_vision_module():
    from sbengine.models.registry import VISION_NAMES
    from sbengine.models.vision import VISION_MODELS

    assert tuple(VISION_MODELS) == VISION_NAMES
