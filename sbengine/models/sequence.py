"""Sequence models for vector data: the 1-D CNN and the GRU/LSTM of the paper's App. C (docs/method.md §4.2).

Both read a feature vector as a sequence: the CNN as one channel of length d, the recurrent nets as d / l
steps of l features. They exist to show that simplicity bias is not an artefact of fully connected nets.
"""

from __future__ import annotations

import torch
from torch import nn


class CNN1d(nn.Module):
    """An "(f, k, L)-CNN": L same-padded Conv1d layers of f filters of width k, an optional max-pool, and
    a two-layer head whose hidden width is the input length d.

    Unlike the original, the head's input size accounts for the pool and ``num_classes`` is honoured
    (docs/method.md §12.6).
    """

    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int,
        filters: int = 32,
        kernel: int = 7,
        layers: int = 1,
        pool: bool = False,
    ) -> None:
        super().__init__()
        padding = (kernel - 1) // 2
        convs: list[nn.Module] = [nn.Conv1d(1, filters, kernel, padding=padding), nn.ReLU()]
        for _ in range(layers - 1):
            convs += [nn.Conv1d(filters, filters, kernel, padding=padding), nn.ReLU()]
        length = in_features
        if pool:
            window = kernel // 2
            if window < 1:
                raise ValueError(
                    f"cnn1d: pool needs kernel >= 3 (the pool window is kernel // 2), got {kernel}"
                )
            if in_features < window:
                raise ValueError(
                    f"cnn1d: pool window {window} is longer than the {in_features} input features"
                )
            convs.append(nn.MaxPool1d(window))
            length = in_features // window
        self.features = nn.Sequential(*convs)
        self.head = nn.Sequential(
            nn.Linear(filters * length, in_features),
            nn.ReLU(),
            nn.Linear(in_features, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.flatten(1).unsqueeze(1)).flatten(1))


class RecurrentClassifier(nn.Module):
    """An "(h, l, L)-GRU" or "-LSTM": the input is cut into steps of ``step_features`` values, read by a
    batch-first RNN of ``layers`` layers and ``hidden`` units, and classified from the last step's output
    (or, with ``many_to_many``, from all steps' outputs concatenated)."""

    def __init__(
        self,
        *,
        cell: str,
        in_features: int,
        num_classes: int,
        hidden: int = 100,
        step_features: int = 10,
        layers: int = 1,
        many_to_many: bool = False,
    ) -> None:
        super().__init__()
        if in_features % step_features:
            raise ValueError(
                f"{cell}: step_features must divide the number of input features ({in_features}), "
                f"got {step_features}"
            )
        rnn_class = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.steps = in_features // step_features
        self.step_features = step_features
        self.many_to_many = many_to_many
        self.rnn = rnn_class(step_features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden * (self.steps if many_to_many else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.flatten(1).reshape(-1, self.steps, self.step_features))
        return self.head(out.flatten(1) if self.many_to_many else out[:, -1])
