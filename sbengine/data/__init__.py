"""Datasets: synthetic slab data, MNIST-CIFAR, and the Dataset container they share."""

from sbengine.data.build import build_dataset
from sbengine.data.dataset import Dataset, FeatureBlock, image_region_indices
from sbengine.data.presets import PRESET_NAMES, SYNTHETIC_PRESETS
from sbengine.data.synthetic import BlockSpec, SyntheticSpec, bayes_accuracy, generate

__all__ = [
    "PRESET_NAMES",
    "SYNTHETIC_PRESETS",
    "BlockSpec",
    "Dataset",
    "FeatureBlock",
    "SyntheticSpec",
    "bayes_accuracy",
    "build_dataset",
    "generate",
    "image_region_indices",
]
