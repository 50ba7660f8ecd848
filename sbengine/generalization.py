"""The generalization check (docs/method.md §9): is the model's accuracy below what S^c alone could reach?

With synthetic blocks the Bayes accuracy of any set of blocks is known analytically, so a model that
generalizes like the best predictor on S (e.g. 0.95 from a noisy linear coordinate) while S^c alone allows
1.0 is flagged as the paper's "sub-optimal generalization" caused by simplicity bias.
"""

from __future__ import annotations

from typing import Any

import torch

from sbengine.data.dataset import Dataset
from sbengine.data.synthetic import BlockSpec, bayes_accuracy
from sbengine.evaluation import accuracy_and_loss, predict_logits

# Accuracy this far below the Bayes accuracy of S^c alone counts as sub-optimal.
SUBOPTIMAL_MARGIN = 0.01


def blocks_bayes_accuracy(dataset: Dataset, block_ids: list[int]) -> float | None:
    """Analytic Bayes accuracy of the given blocks together; None when any block's is unknown (images)."""
    specs = []
    for b in block_ids:
        block = dataset.blocks[b]
        if block.kind not in ("linear", "noisy_linear", "slab", "noisy_slab", "noise"):
            return None
        specs.append(
            BlockSpec(**{k: v for k, v in block.params.items() if k in BlockSpec.__dataclass_fields__})
        )
    return bayes_accuracy(specs)


def generalization_check(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    simple_blocks: list[int] | None = None,
    split: str = "test",
    device: str = "cpu",
) -> dict[str, Any]:
    simple = list(dataset.simple_blocks if simple_blocks is None else simple_blocks)
    complex_ = dataset.complement_blocks(simple)
    x, y = dataset.split(split)
    accuracy, _ = accuracy_and_loss(predict_logits(model, x, device=device), torch.from_numpy(y).to(device))
    bayes_s = blocks_bayes_accuracy(dataset, simple)
    bayes_sc = blocks_bayes_accuracy(dataset, complex_)
    bayes_all = blocks_bayes_accuracy(dataset, list(range(len(dataset.blocks))))
    suboptimal = None if bayes_sc is None else accuracy < bayes_sc - SUBOPTIMAL_MARGIN
    if suboptimal is None:
        summary = "Bayes accuracies are unknown for this dataset's blocks; no generalization verdict"
    elif suboptimal:
        near_s = bayes_s is not None and abs(accuracy - bayes_s) <= SUBOPTIMAL_MARGIN
        summary = (
            f"sub-optimal generalization: accuracy {accuracy:.3f} while S^c alone allows {bayes_sc:.3f}"
            + (f"; it matches S alone ({bayes_s:.3f}), the signature of simplicity bias" if near_s else "")
        )
    else:
        summary = f"accuracy {accuracy:.3f} reaches what S^c alone allows ({bayes_sc:.3f})"
    return {
        "split": split,
        "accuracy": accuracy,
        "bayes_accuracy_s": bayes_s,
        "bayes_accuracy_sc": bayes_sc,
        "bayes_accuracy_all": bayes_all,
        "margin": SUBOPTIMAL_MARGIN,
        "suboptimal": suboptimal,
        "summary": summary,
    }
