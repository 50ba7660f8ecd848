"""The CIFAR-style CNN zoo of the paper's MNIST-CIFAR experiments (docs/method.md §4.3).

These are torchvision's architectures adapted to 32-pixel inputs the way the paper's vendored
PyTorch_CIFAR10 models are: ImageNet stems shrink a 32x32 image to a few pixels before the first stage, so
the stems use 3x3 stride-1 convolutions and drop early down-sampling. Building on torchvision keeps the
blocks and their initialisation standard and avoids vendoring model code; only the stems change. Every
model ends in adaptive average pooling, so any H and W that are multiples of 32 work, including the 3x64x32
MNIST-CIFAR images. Weights are never downloaded: the paper trains every model from scratch.
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision.models as tvm
from torch import nn
from torchvision.models.googlenet import BasicConv2d

# (expansion t, channels c, blocks n, stride s); the second stage keeps stride 1 for 32-px inputs.
MOBILENET_V2_CIFAR_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def _resnet(constructor: Callable[..., tvm.ResNet], num_classes: int) -> tvm.ResNet:
    model = constructor(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def mobilenet_v2(num_classes: int) -> tvm.MobileNetV2:
    model = tvm.mobilenet_v2(
        weights=None,
        num_classes=num_classes,
        inverted_residual_setting=MOBILENET_V2_CIFAR_SETTING,
        dropout=0.2,
    )
    model.features[0][0].stride = (1, 1)
    return model


def densenet121(num_classes: int) -> tvm.DenseNet:
    model = tvm.densenet121(weights=None, num_classes=num_classes)
    model.features.conv0 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.features.conv0.weight)
    return model


def googlenet(num_classes: int) -> tvm.GoogLeNet:
    """Framework-default init, as in the paper's copy; num_classes is honoured (the original dropped it)."""
    model = tvm.googlenet(
        weights=None, num_classes=num_classes, aux_logits=False, init_weights=False, dropout=0.2
    )
    model.conv1 = BasicConv2d(3, 192, kernel_size=3, padding=1)
    model.maxpool1 = model.conv2 = model.conv3 = model.maxpool2 = nn.Identity()
    model.maxpool3 = nn.MaxPool2d(3, stride=2, padding=1)
    model.maxpool4 = nn.MaxPool2d(3, stride=2, padding=1)
    return model


def _vgg_bn(constructor: Callable[..., tvm.VGG], num_classes: int) -> tvm.VGG:
    return constructor(weights=None, num_classes=num_classes)


VISION_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda n: _resnet(tvm.resnet18, n),
    "resnet34": lambda n: _resnet(tvm.resnet34, n),
    "resnet50": lambda n: _resnet(tvm.resnet50, n),
    "mobilenet_v2": mobilenet_v2,
    "densenet121": densenet121,
    "googlenet": googlenet,
    "vgg11_bn": lambda n: _vgg_bn(tvm.vgg11_bn, n),
    "vgg13_bn": lambda n: _vgg_bn(tvm.vgg13_bn, n),
    "vgg16_bn": lambda n: _vgg_bn(tvm.vgg16_bn, n),
    "vgg19_bn": lambda n: _vgg_bn(tvm.vgg19_bn, n),
}
