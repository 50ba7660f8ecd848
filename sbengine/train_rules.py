"""The rules of one training run, kept once for every training loop (docs/method.md §5.1, §6, §7.2).

``train.train`` (one model, with or without adversarial training) and ``ensemble_train.train_stacked``
(members of a vectorized ensemble) differ only in how they compute a batch update. Everything around the
updates is decided here, by one ``RunTracker`` per model: when to evaluate and what to record, divergence,
the stop rule and its patience, the best-on-validation snapshot, the final selection and metrics. Having a
single copy is what guarantees that a member of a vectorized ensemble stops, and is selected, exactly where
a single run with its seed would be.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from sbengine.data.dataset import Dataset
from sbengine.evaluation import accuracy_and_loss, evaluate, predict_logits
from sbengine.progress import ProgressCallback, report

if TYPE_CHECKING:
    from sbengine.adversarial import Adversary
    from sbengine.train import TrainConfig

DIVERGENCE_LOSS = 1e6
_SPLIT_METRICS = ("train_accuracy", "train_loss", "val_accuracy", "val_loss")


@dataclass
class TrainResult:
    updates: int
    epochs: int
    seconds: float
    stopped_because: str
    selected_step: int
    metrics: dict[str, float]
    history: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BatchLosses:
    """Training-batch losses summed since the last evaluation, one slot per model.

    A vectorized ensemble keeps all its members in one tensor so that recording a step's losses costs one
    tensor operation however many members train; a single run uses one slot.
    """

    def __init__(self, size: int, device: str):
        self.sums = torch.zeros(size, device=device)
        self.count = 0

    def add(self, losses: torch.Tensor) -> None:
        self.sums += losses.detach().float()
        self.count += 1

    def mean(self, slot: int) -> float | None:
        return self.sums[slot].item() / self.count if self.count else None

    def reset(self) -> None:
        self.sums = torch.zeros_like(self.sums)
        self.count = 0

    def keep(self, slots: list[int]) -> None:
        self.sums = self.sums.index_select(0, torch.as_tensor(slots, device=self.sums.device))


class RunTracker:
    """What one model's training has seen and what it must do next; the loop only computes updates.

    The loop calls ``due``/``evaluate`` before each update, then ``stop_reason``; once that names a reason,
    ``finish`` (last evaluation, selection) and ``result``. ``model`` is always the module that holds this
    run's current weights when the tracker is called.

    Rules (docs/method.md §5.1): evaluation every ``eval_every`` updates on the full train split and the
    validation split. The run diverges when a train, validation or batch loss is non-finite or above
    ``DIVERGENCE_LOSS``. It has converged at the first evaluation where train accuracy reaches
    ``stop.train_accuracy`` or the loss falls below ``stop.train_loss`` (never at step 0), and stops
    ``stop.patience_updates`` later; it always stops at ``max_updates`` / ``max_epochs``. The best snapshot is
    the latest one with the highest validation accuracy, never one chosen on test.

    With an ``adversary`` (adversarial training, §7.2) every row also carries the robust and randomized
    accuracies, selection uses the robust validation accuracy, and the loss the stop rule sees is the
    adversarial batch loss averaged since the previous evaluation.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        train_data: tuple[torch.Tensor, torch.Tensor],
        val: tuple[Any, Any] | None,
        batches_per_epoch: int,
        device: str,
        clock: Callable[[], float],
        adversary: Adversary | None = None,
        progress: ProgressCallback | None = None,
    ):
        self.config = config
        self.train_data = train_data
        self.val = val
        self.batches_per_epoch = batches_per_epoch
        self.device = device
        self.clock = clock
        self.adversary = adversary
        self.progress = progress
        stop = config.stop
        self.max_updates = stop.max_updates
        if stop.max_epochs is not None:
            self.max_updates = min(self.max_updates, stop.max_epochs * batches_per_epoch)
        self.selection_key = "robust_accuracy" if adversary is not None else "val_accuracy"
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.converged_at: int | None = None
        self.diverged_at: int | None = None
        self.updates = 0
        self.stopped_because = ""
        self.selected_step = 0

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep for a resumed run to decide as an uninterrupted one would."""
        return {"history": self.history, "converged_at": self.converged_at, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.converged_at, self.best = state["history"], state["converged_at"], state["best"]

    def due(self, step: int) -> bool:
        # A run resumed from a checkpoint taken at an evaluation step must not evaluate it twice.
        return step % self.config.eval_every == 0 and (not self.history or self.history[-1]["step"] != step)

    def evaluate(self, model: torch.nn.Module, step: int, *, batch_loss: float | None) -> dict[str, Any]:
        """Record one history row for ``step`` and apply the selection, divergence and convergence rules."""
        train_acc, train_loss = evaluate(model, *self.train_data, device=self.device)
        row: dict[str, Any] = {
            "step": step,
            "epoch": step // self.batches_per_epoch,
            "train_accuracy": train_acc,
            "train_loss": train_loss,
        }
        if batch_loss is not None:
            row["batch_loss"] = batch_loss
        if self.val is not None:
            row["val_accuracy"], row["val_loss"] = evaluate(model, *self.val, device=self.device)
        if self.adversary is not None:
            row.update(self.adversary.evaluate(model))
        key = self.selection_key
        if step > 0 and key in row and (self.best is None or row[key] >= self.best["score"]):
            self.best = {
                "step": step,
                "score": row[key],
                "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            }
        row["seconds"] = round(self.clock(), 3)
        self.history.append(row)
        report(
            self.progress, "train", step, self.max_updates, **{k: v for k, v in row.items() if k != "step"}
        )
        losses = [train_loss, row.get("val_loss", 0.0), row.get("batch_loss", 0.0)]
        if any(not math.isfinite(v) or v > DIVERGENCE_LOSS for v in losses):
            self.diverged_at = step
            return row
        stop = self.config.stop
        loss_for_stop = row.get("batch_loss", train_loss) if self.adversary is not None else train_loss
        if self.converged_at is None and (
            (stop.train_accuracy is not None and train_acc >= stop.train_accuracy)
            or (stop.train_loss is not None and loss_for_stop < stop.train_loss and step > 0)
        ):
            self.converged_at = step
        return row

    def stop_reason(self, step: int) -> str | None:
        """Why training must stop before update ``step + 1``, or None to go on."""
        stop = self.config.stop
        if self.diverged_at == step:
            return "diverged"
        if self.converged_at is not None and step >= self.converged_at + stop.patience_updates:
            return "converged"
        if step >= self.max_updates:
            return "max_epochs" if self.max_updates < stop.max_updates else "max_updates"
        return None

    def finish(self, model: torch.nn.Module, step: int, reason: str, *, batch_loss: float | None) -> None:
        """Stop at ``step``: evaluate the final weights unless that just happened, then load the selected
        weights (the best snapshot with ``select="best_val"``, else the final ones) into ``model``."""
        if not self.history or self.history[-1]["step"] != step:
            self.evaluate(model, step, batch_loss=batch_loss)
        self.updates, self.stopped_because, self.selected_step = step, reason, step
        if self.config.select == "best_val" and self.best is not None:
            model.load_state_dict(self.best["state"])
            self.selected_step = self.best["step"]

    def result(self, model: torch.nn.Module, dataset: Dataset, *, seconds: float) -> TrainResult:
        """The finished run's result; ``seconds`` is the time spent so far, to which the final metrics'
        own time is added."""
        started = time.perf_counter()
        model.eval()
        last = self.history[-1]
        known = (
            {k: last[k] for k in _SPLIT_METRICS if k in last} if self.selected_step == last["step"] else {}
        )
        metrics = final_metrics(model, dataset, self.device, known=known)
        return TrainResult(
            updates=self.updates,
            epochs=math.ceil(self.updates / self.batches_per_epoch),
            seconds=round(seconds + time.perf_counter() - started, 3),
            stopped_because=self.stopped_because,
            selected_step=self.selected_step,
            metrics=metrics,
            history=self.history,
        )


def final_metrics(
    model: torch.nn.Module, dataset: Dataset, device: str, known: dict[str, float]
) -> dict[str, float]:
    """Accuracy and loss on every split, reusing what the last evaluation measured on these same weights."""
    out: dict[str, float] = dict(known)
    for name, (x, y) in dataset.splits.items():
        if f"{name}_accuracy" in out:
            continue
        logits = predict_logits(model, x, device=device)
        out[f"{name}_accuracy"], out[f"{name}_loss"] = accuracy_and_loss(logits, torch.from_numpy(y))
    return out
