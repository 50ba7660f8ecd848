"""The training loop: one obvious loop, configured by a dataclass (docs/method.md §5.1, with §12's fixes).

Data stays in tensors: each epoch draws one permutation from a generator seeded by (seed, epoch) and the
loop slices index batches from it, so there is no per-sample DataLoader and a resumed run sees exactly
the batches an uninterrupted one would. When to evaluate, stop and which weights to keep is decided by
``sbengine.train_rules.RunTracker``, the same code a vectorized ensemble member uses; this module only
computes the updates (plain, or on PGD-perturbed batches with adversarial training).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sbengine.data.dataset import Dataset
from sbengine.device import cpu_threads_for, generator, resolve_device
from sbengine.progress import ProgressCallback, report
from sbengine.train_rules import BatchLosses, RunTracker, TrainResult

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SELECTIONS = ("final", "best_val")
MAX_UPDATES_LIMIT = 100_000_000
# Move a whole split to the accelerator when it is smaller than this; otherwise stream pinned batches.
_DEVICE_RESIDENT_BYTES = 4 * 2**30


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class StopRule:
    """Stop when train accuracy >= ``train_accuracy`` or train loss < ``train_loss`` (checked at each
    evaluation), then run ``patience_updates`` more updates; always stop at ``max_updates`` / ``max_epochs``
    or on divergence (non-finite loss or loss > 1e6)."""

    train_accuracy: float | None = None
    train_loss: float | None = None
    max_updates: int = 100_000
    max_epochs: int | None = None
    patience_updates: int = 0

    def validate(self) -> None:
        if self.train_accuracy is not None:
            _check(
                _is_number(self.train_accuracy) and 0 < self.train_accuracy <= 1,
                f"stop.train_accuracy must be in (0, 1], got {self.train_accuracy!r}",
            )
        if self.train_loss is not None:
            _check(
                _is_number(self.train_loss) and self.train_loss > 0,
                f"stop.train_loss must be positive, got {self.train_loss!r}",
            )
        _check(
            _is_int(self.max_updates) and 1 <= self.max_updates <= MAX_UPDATES_LIMIT,
            f"stop.max_updates must be an integer in [1, {MAX_UPDATES_LIMIT}], got {self.max_updates!r}",
        )
        if self.max_epochs is not None:
            _check(
                _is_int(self.max_epochs) and self.max_epochs >= 1,
                f"stop.max_epochs must be a positive integer, got {self.max_epochs!r}",
            )
        _check(
            _is_int(self.patience_updates) and self.patience_updates >= 0,
            f"stop.patience_updates must be a non-negative integer, got {self.patience_updates!r}",
        )


@dataclass
class StepSchedule:
    """Multiply the learning rate by ``gamma`` every ``step_epochs`` epochs."""

    step_epochs: int
    gamma: float

    def validate(self) -> None:
        _check(
            _is_int(self.step_epochs) and self.step_epochs >= 1,
            f"schedule.step_epochs must be a positive integer, got {self.step_epochs!r}",
        )
        _check(
            _is_number(self.gamma) and 0 < self.gamma <= 1,
            f"schedule.gamma must be in (0, 1], got {self.gamma!r}",
        )


@dataclass
class AdversarialTraining:
    """PGD inside the loop (docs/method.md §7.2): every batch is replaced by its PGD perturbation
    before the step.

    ``attack`` and ``eval_attack`` are PGD settings (``sbengine.attacks.PGDConfig`` fields); the evaluation
    attack defaults to the training one. The attack runs with BatchNorm on batch statistics but without
    updating the running statistics (§12.12). At each evaluation the robust accuracy and the S- and
    S^c-randomized accuracies on the validation split (at most ``eval_examples`` rows) join the history, and
    ``select="best_val"`` picks the highest *robust* validation accuracy. With adversarial training the
    stop rule's ``train_loss`` is the adversarial training loss averaged since the previous evaluation.
    """

    attack: dict[str, Any]
    eval_attack: dict[str, Any] | None = None
    mixed_precision: bool = True
    eval_examples: int = 2000

    def pgd_configs(self):
        from sbengine.attacks import PGDConfig

        try:
            train_cfg = PGDConfig.from_dict(self.attack)
            eval_cfg = PGDConfig.from_dict(self.eval_attack) if self.eval_attack is not None else train_cfg
        except (TypeError, ValueError) as exc:
            raise ValueError(f"adversarial: {exc}") from None
        return train_cfg, eval_cfg

    def validate(self) -> None:
        _check(isinstance(self.attack, dict), "adversarial.attack must be an object of PGD settings")
        _check(isinstance(self.mixed_precision, bool), "adversarial.mixed_precision must be true or false")
        _check(
            _is_int(self.eval_examples) and self.eval_examples >= 1,
            f"adversarial.eval_examples must be a positive integer, got {self.eval_examples!r}",
        )
        self.pgd_configs()


@dataclass
class TrainConfig:
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    stop: StopRule = field(default_factory=lambda: StopRule(train_accuracy=0.9999))
    eval_every: int = 1000
    select: str = "final"
    schedule: StepSchedule | None = None
    adversarial: AdversarialTraining | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        allowed = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - allowed)
        _check(
            not unknown,
            f"training: unknown option {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
            if unknown
            else "",
        )
        d = dict(d)
        stop = d.pop("stop", None)
        schedule = d.pop("schedule", None)
        adversarial = d.pop("adversarial", None)
        cfg = cls(**d)
        if stop is not None:
            _check(isinstance(stop, dict), "training.stop must be an object")
            unknown = sorted(set(stop) - set(StopRule.__dataclass_fields__))
            _check(not unknown, f"training.stop: unknown option {unknown[0]!r}" if unknown else "")
            cfg.stop = StopRule(**stop)
        if schedule is not None:
            _check(
                isinstance(schedule, dict) and set(schedule) == {"step_epochs", "gamma"},
                'training.schedule must be {"step_epochs": N, "gamma": G}',
            )
            cfg.schedule = StepSchedule(**schedule)
        if adversarial is not None:
            _check(isinstance(adversarial, dict), "training.adversarial must be an object")
            unknown = sorted(set(adversarial) - set(AdversarialTraining.__dataclass_fields__))
            _check(not unknown, f"training.adversarial: unknown option {unknown[0]!r}" if unknown else "")
            _check("attack" in adversarial, "training.adversarial.attack is required")
            cfg.adversarial = AdversarialTraining(**adversarial)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        _check(
            self.optimizer in OPTIMIZERS,
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
        )
        _check(_is_number(self.lr) and 0 < self.lr <= 100, f"lr must be in (0, 100], got {self.lr!r}")
        _check(
            _is_number(self.momentum) and 0 <= self.momentum < 1,
            f"momentum must be in [0, 1), got {self.momentum!r}",
        )
        _check(
            _is_number(self.weight_decay) and 0 <= self.weight_decay < 1,
            f"weight_decay must be in [0, 1), got {self.weight_decay!r}",
        )
        _check(
            _is_int(self.batch_size) and 1 <= self.batch_size <= 65536,
            f"batch_size must be an integer in [1, 65536], got {self.batch_size!r}",
        )
        _check(
            _is_int(self.eval_every) and self.eval_every >= 1,
            f"eval_every must be a positive integer, got {self.eval_every!r}",
        )
        _check(
            self.select in SELECTIONS, f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}"
        )
        self.stop.validate()
        if self.schedule is not None:
            self.schedule.validate()
        if self.adversarial is not None:
            self.adversarial.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # foreach: one fused call per update instead of a Python loop over parameters (matters for small models)
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.RMSprop(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
    )


def lr_at_epoch(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule is None:
        return cfg.lr
    return cfg.lr * cfg.schedule.gamma ** (epoch // cfg.schedule.step_epochs)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which a run with ``seed`` visits the n training rows in ``epoch``: a stream of its own,
    so a resumed run, or an ensemble member trained beside others, sees exactly the same batches."""
    return torch.randperm(n, generator=generator(seed, 2, epoch))


class _Split:
    """A split's tensors, resident on the device when they fit, otherwise pinned in host memory."""

    def __init__(self, x, y, device: str):
        x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
        self.n = x_t.shape[0]
        if device == "cpu" or x_t.numel() * 4 <= _DEVICE_RESIDENT_BYTES:
            self.x, self.y, self.streamed = x_t.to(device), y_t.to(device), False
        else:
            self.x, self.y, self.streamed = x_t.pin_memory(), y_t.pin_memory(), True
        self.device = device

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.streamed:
            return (
                self.x[idx].pin_memory().to(self.device, non_blocking=True),
                self.y[idx].pin_memory().to(self.device, non_blocking=True),
            )
        idx = idx.to(self.device)
        return self.x.index_select(0, idx), self.y.index_select(0, idx)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train(
    model: torch.nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    seed: int,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``dataset['train']``; on return it holds the selected weights.

    With ``checkpoint_path`` the loop saves model, optimizer, step, RNG and history there every
    ``checkpoint_every`` updates (default: at each evaluation), atomically, and resumes from it if it exists.
    """
    config.validate()
    device = resolve_device(device)
    with cpu_threads_for(model, device, config.batch_size):
        return _train(
            model,
            dataset,
            config,
            seed=seed,
            device=device,
            progress=progress,
            checkpoint_path=checkpoint_path,
            checkpoint_every=checkpoint_every,
        )


def _train(
    model, dataset, config, *, seed, device, progress, checkpoint_path, checkpoint_every
) -> TrainResult:
    """The update loop; evaluation, stopping and selection are the ``RunTracker``'s."""
    model.to(device)
    train_split = _Split(*dataset.split("train"), device)
    optimizer = make_optimizer(model, config)
    batches_per_epoch = math.ceil(train_split.n / config.batch_size)
    checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
    checkpoint_every = checkpoint_every or config.eval_every

    adversary = None
    if config.adversarial is not None:
        from sbengine.adversarial import Adversary

        adversary = Adversary(config.adversarial, dataset, device=device, seed=seed)
    step, elapsed_before = 0, 0.0

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    tracker = RunTracker(
        config,
        train_data=(train_split.x, train_split.y),
        val=dataset.splits.get("val"),
        batches_per_epoch=batches_per_epoch,
        device=device,
        clock=elapsed,
        adversary=adversary,
        progress=progress,
    )
    losses = BatchLosses(1, device)
    dropout_rng = generator(seed, 1).get_state()
    if checkpoint_path is not None and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        tracker.load_state_dict(state)
        step, elapsed_before, dropout_rng = state["step"], state["seconds"], state["rng"]
    torch.set_rng_state(dropout_rng)

    def checkpoint() -> None:
        if checkpoint_path is not None:
            _save_checkpoint(
                checkpoint_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    **tracker.state_dict(),
                    "seconds": elapsed(),
                    "rng": torch.get_rng_state(),
                },
            )

    started = time.perf_counter()
    progress_every = max(1, min(config.eval_every, 100))
    perm, perm_epoch = None, -1
    model.train()  # evaluation restores the mode it found, so this holds for the whole loop
    while True:
        if tracker.due(step):
            tracker.evaluate(model, step, batch_loss=losses.mean(0))
            losses.reset()
        reason = tracker.stop_reason(step)
        if reason != "diverged" and step > 0 and step % checkpoint_every == 0:
            checkpoint()
        if reason is not None:
            break
        epoch, position = divmod(step, batches_per_epoch)
        if perm_epoch != epoch:
            perm, perm_epoch = epoch_order(train_split.n, seed, epoch), epoch
            for group in optimizer.param_groups:
                group["lr"] = lr_at_epoch(config, epoch)
        xb, yb = train_split.batch(perm[position * config.batch_size : (position + 1) * config.batch_size])
        if adversary is not None:
            xb = adversary.perturb(model, xb, yb, step)
        optimizer.zero_grad(set_to_none=True)
        with adversary.autocast() if adversary is not None else contextlib.nullcontext():
            loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        losses.add(loss)
        step += 1
        if step % progress_every == 0:
            report(progress, "train", step, tracker.max_updates)

    tracker.finish(model, step, reason, batch_loss=losses.mean(0))
    return tracker.result(model, dataset, seconds=elapsed())
