"""GET /v1/architectures: what ``architecture`` may say, for training (POST /v1/models) and uploads.

The API never imports the engine, so the lists here mirror it (tests/service/test_schema_mirror.py): the
registry's architectures come from the request schemas themselves, torchvision's classifiers from
``torchvision.models.list_models`` of the pinned torchvision, and the ONNX operators the engine runs in torch
from sbengine/models/onnx_ops.py.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

TORCHVISION_VERSION = "0.29"
TIMM_VERSION = "1.0.24"
TORCHVISION_MODELS: tuple[str, ...] = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121",
    "densenet161", "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
    "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf",
    "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf", "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf",
    "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf", "resnet101",
    "resnet152", "resnet18", "resnet34", "resnet50", "resnext101_32x8d", "resnext101_64x4d",
    "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16",
    "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
)  # fmt: skip
ONNX_TORCH_OPERATORS: tuple[str, ...] = (
    "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten",
    "Gather", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid", "HardSwish", "Identity",
    "LayerNormalization", "LeakyRelu", "Less", "Log", "LogSoftmax", "MatMul", "Max", "MaxPool", "Min", "Mul",
    "Neg", "Not", "PRelu", "Pad", "Pow", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum",
    "Relu", "Reshape", "Selu", "Shape", "Sigmoid", "Slice", "Softmax", "Softplus", "Softsign", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Transpose", "Unsqueeze", "Where",
)  # fmt: skip


class ArchitectureInfo(BaseModel):
    name: str
    summary: str
    input: str = Field(description="vector, image (C, H, W), or any (an ONNX graph says itself)")
    trainable: bool = Field(description="POST /v1/models can train it; otherwise upload its weights.")
    uploadable: bool = True
    options: dict[str, Any] = Field(description="JSON schema of each option (besides name).")
    models: list[str] | None = Field(default=None, description="The accepted model names, where listed.")
    notes: str | None = None


class ArchitectureList(BaseModel):
    data: list[ArchitectureInfo]
