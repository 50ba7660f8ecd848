"""Training several same-architecture members in one vectorized pass (torch.func stacked parameters + vmap).

Small models spend much of a step in Python and dispatch overhead, so M members trained one after another
pay that overhead M times. Here the members' parameters are stacked along a leading "member" dimension and
one ``vmap``'ed forward/backward serves them all. The result must be what ``sbengine.train.train`` gives
each member on its own, so this loop mirrors ``train``'s semantics step for step:

- member *i* sees exactly its own batches: its permutation ``generator(seed_i, 2, epoch)`` is gathered into
  an (M, B, ...) batch, and the loss is the *sum* of the per-member mean losses, so each member's slice of
  the stacked gradient is exactly its own gradient;
- one standard optimizer (``train.make_optimizer``) steps the stacked leaves; SGD (momentum, weight decay),
  Adam and RMSprop updates are elementwise, so this equals one optimizer per member;
- evaluation, stop rule, patience, divergence, ``best_val`` snapshots and the final evaluation are tracked
  per member; evaluation runs each member's weights through its own module with ``evaluation.evaluate``,
  exactly as ``train`` does (it is arithmetic-bound, so vmap would not make it cheaper);
- a member that stops is snapshotted at its own stop step and dropped from the stack together with its
  optimizer state, so later updates of the others can neither leak into it nor pay for it.

On CPU the weights come out bit for bit equal to one-by-one training; elsewhere batched and single matrix
products may round differently (≈1e-7 per step).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from sbengine.data.dataset import Dataset
from sbengine.device import cpu_threads_for, generator, resolve_device
from sbengine.evaluation import evaluate
from sbengine.progress import ProgressCallback, report
from sbengine.train import TrainConfig, _Split, make_optimizer
from sbengine.train import lr_at_epoch as _lr_at_epoch
from sbengine.train_rules import DIVERGENCE_LOSS, TrainResult
from sbengine.train_rules import final_metrics as _final_metrics


@dataclass
class _Member:
    """Book-keeping of one member while it trains (what ``train`` keeps in local variables)."""

    model: nn.Module
    seed: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    converged_at: int | None = None
    stopped_because: str = ""
    updates: int = 0
    state: dict[str, torch.Tensor] | None = None
    seconds: float = 0.0


class _Stack:
    """The training members' parameters stacked along dim 0, their optimizer, and the vmap'ed loss.

    ``rows[r]`` is the index of the member held in row ``r``; ``keep`` drops the rows of stopped members
    from the parameters, buffers and optimizer state alike.
    """

    def __init__(self, models: list[nn.Module], config: TrainConfig):
        params, buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        self.names = list(params)
        # A ParameterList is a Module, so the optimizer is built exactly like train()'s (make_optimizer).
        self.leaves = nn.ParameterList([nn.Parameter(params[n].detach()) for n in self.names])
        self.buffers = {k: v.detach() for k, v in buffers.items()}
        self.config = config
        self.optimizer = make_optimizer(self.leaves, config)
        self.rows = list(range(len(models)))

        def member_loss(p, b, x, y):
            return F.cross_entropy(functional_call(self.base, (p, b), (x,)), y)

        self._losses = torch.vmap(member_loss)

    def losses(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Per-member mean cross-entropy, shape (M,), member r on its own batch (xb[r], yb[r]).

        ``F.cross_entropy`` inside vmap is the same reduction as ``train``'s, which keeps the gradients bit
        for bit equal on CPU (the loss taken outside vmap on (M, C, B) logits is ~3% faster but is not)."""
        params = dict(zip(self.names, self.leaves, strict=True))
        return self._losses(params, self.buffers, xb, yb)

    def state_of(self, row: int) -> dict[str, torch.Tensor]:
        """A detached copy of one row's weights, keyed like the member's ``state_dict``."""
        out = {n: leaf[row].detach().clone() for n, leaf in zip(self.names, self.leaves, strict=True)}
        out.update({n: b[row].clone() for n, b in self.buffers.items()})
        return out

    def keep(self, keep_rows: list[int], lr: float) -> None:
        index = torch.as_tensor(keep_rows, device=self.leaves[0].device)
        old_leaves, old_optimizer = list(self.leaves), self.optimizer
        self.leaves = nn.ParameterList([nn.Parameter(p.detach().index_select(0, index)) for p in old_leaves])
        self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}
        self.optimizer = make_optimizer(self.leaves, self.config)
        for old, new in zip(old_leaves, self.leaves, strict=True):
            state = old_optimizer.state.get(old)
            if state:  # momentum buffers, Adam moments: per-element, so rows slice; step counters are shared
                self.optimizer.state[new] = {
                    k: (v.index_select(0, index) if v.dim() > 0 else v.clone()) if torch.is_tensor(v) else v
                    for k, v in state.items()
                }
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.rows = [self.rows[r] for r in keep_rows]


def train_stacked(
    models: list[nn.Module],
    dataset: Dataset,
    config: TrainConfig,
    *,
    seeds: list[int],
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> list[TrainResult]:
    """Train ``models`` (same architecture, no dropout / batch norm) together; member *i* uses ``seeds[i]``
    for shuffling exactly as ``train(models[i], dataset, config, seed=seeds[i])`` would. On return each
    model holds its selected weights, in eval mode."""
    config.validate()
    if config.adversarial is not None:
        raise ValueError("adversarial training cannot be vectorized; train the members one after another")
    if len(seeds) != len(models) or not models:
        raise ValueError("train_stacked needs one seed per model and at least one model")
    device = resolve_device(device)
    for model in models:
        model.to(device)
    stack = _Stack(models, config)
    members = [_Member(model=m, seed=s) for m, s in zip(models, seeds, strict=True)]
    with cpu_threads_for(models[0], device, config.batch_size):  # per-member work decides, as in train()
        batches_per_epoch = _train_stacked(stack, members, dataset, config, device=device, progress=progress)
        results = []
        for m in members:
            started = time.perf_counter()
            m.model.load_state_dict(m.state)
            m.model.eval()
            selected_step = m.best["step"] if config.select == "best_val" and m.best is not None else m.updates
            last = m.history[-1]
            known = {k: last[k] for k in ("train_accuracy", "train_loss", "val_accuracy", "val_loss") if k in last}
            metrics = _final_metrics(m.model, dataset, device, known=known if selected_step == last["step"] else {})
            results.append(TrainResult(
                updates=m.updates,
                epochs=math.ceil(m.updates / batches_per_epoch),
                seconds=round(m.seconds + time.perf_counter() - started, 3),
                stopped_because=m.stopped_because,
                selected_step=selected_step,
                metrics=metrics,
                history=m.history,
            ))
    return results


def _train_stacked(stack: _Stack, members: list[_Member], dataset, config: TrainConfig, *, device, progress) -> int:
    """The loop of ``train``, for all rows of ``stack`` at once; fills in ``members``; returns batches/epoch."""
    train_split = _Split(*dataset.split("train"), device)
    val = dataset.splits.get("val")
    batch_size = config.batch_size
    batches_per_epoch = math.ceil(train_split.n / batch_size)
    stop = config.stop
    max_updates = stop.max_updates
    if stop.max_epochs is not None:
        max_updates = min(max_updates, stop.max_epochs * batches_per_epoch)
    step = 0
    loss_sum, loss_count = torch.zeros(len(members), device=device), 0
    segment_start = time.perf_counter()  # each member is charged an equal share of the time since then

    def seconds_of(member: _Member) -> float:
        return member.seconds + (time.perf_counter() - segment_start) / len(stack.rows)

    def run_evaluation(rows: list[int]) -> list[int]:
        """Record a history row for each of ``rows`` (train's run_evaluation); returns the diverged rows."""
        nonlocal loss_sum, loss_count
        diverged = []
        for r in rows:
            member = members[stack.rows[r]]
            member.model.load_state_dict(stack.state_of(r))
            train_acc, train_loss = evaluate(member.model, train_split.x, train_split.y, device=device)
            row: dict[str, Any] = {"step": step, "epoch": step // batches_per_epoch,
                                   "train_accuracy": train_acc, "train_loss": train_loss}
            if loss_count:
                row["batch_loss"] = loss_sum[r].item() / loss_count
            if val is not None:
                row["val_accuracy"], row["val_loss"] = evaluate(member.model, *val, device=device)
                if step > 0 and (member.best is None or row["val_accuracy"] >= member.best["score"]):
                    member.best = {"step": step, "score": row["val_accuracy"], "state": stack.state_of(r)}
            row["seconds"] = round(seconds_of(member), 3)
            member.history.append(row)
            losses = [train_loss, row.get("val_loss", 0.0), row.get("batch_loss", 0.0)]
            if any(not math.isfinite(v) or v > DIVERGENCE_LOSS for v in losses):
                diverged.append(r)
            elif member.converged_at is None and (
                (stop.train_accuracy is not None and train_acc >= stop.train_accuracy)
                or (stop.train_loss is not None and train_loss < stop.train_loss and step > 0)
            ):
                member.converged_at = step
        if len(rows) == len(stack.rows):
            loss_sum, loss_count = torch.zeros_like(loss_sum), 0
        accuracies = [members[stack.rows[r]].history[-1]["train_accuracy"] for r in rows]
        report(progress, "train", step, max_updates, members_training=len(stack.rows),
               train_accuracy=sum(accuracies) / len(accuracies))
        return diverged

    progress_every = max(1, min(config.eval_every, 100))
    perms, perm_epoch = None, -1
    while True:
        stopping: dict[int, str] = {}
        if step % config.eval_every == 0:
            stopping = dict.fromkeys(run_evaluation(list(range(len(stack.rows)))), "diverged")
        for r, index in enumerate(stack.rows):
            member = members[index]
            if r in stopping:
                continue
            if member.converged_at is not None and step >= member.converged_at + stop.patience_updates:
                stopping[r] = "converged"
            elif step >= max_updates:
                stopping[r] = "max_epochs" if max_updates < stop.max_updates else "max_updates"
        if stopping:
            unevaluated = [r for r in sorted(stopping) if members[stack.rows[r]].history[-1]["step"] != step]
            if unevaluated:
                run_evaluation(unevaluated)
            now = time.perf_counter()
            for r, index in enumerate(stack.rows):
                member = members[index]
                member.seconds += (now - segment_start) / len(stack.rows)
                if r in stopping:
                    member.stopped_because, member.updates = stopping[r], step
                    use_best = config.select == "best_val" and member.best is not None
                    member.state = member.best["state"] if use_best else stack.state_of(r)
            segment_start = now
            keep = [r for r in range(len(stack.rows)) if r not in stopping]
            if not keep:
                return batches_per_epoch
            stack.keep(keep, _lr_at_epoch(config, step // batches_per_epoch))
            loss_sum = loss_sum.index_select(0, torch.as_tensor(keep, device=loss_sum.device))
            if perms is not None:
                perms = perms.index_select(0, torch.as_tensor(keep))
        epoch, position = divmod(step, batches_per_epoch)
        if perm_epoch != epoch:
            perms = torch.stack([torch.randperm(train_split.n, generator=generator(members[i].seed, 2, epoch))
                                 for i in stack.rows])
            perm_epoch = epoch
            for group in stack.optimizer.param_groups:
                group["lr"] = _lr_at_epoch(config, epoch)
        idx = perms[:, position * batch_size : (position + 1) * batch_size]
        xb, yb = train_split.batch(idx.reshape(-1))  # one gather for every member's own batch
        xb, yb = xb.view(*idx.shape, *xb.shape[1:]), yb.view(idx.shape)
        stack.optimizer.zero_grad(set_to_none=True)
        losses = stack.losses(xb, yb)
        losses.sum().backward()
        stack.optimizer.step()
        loss_sum += losses.detach().float()
        loss_count += 1
        step += 1
        if step % progress_every == 0:
            report(progress, "train", step, max_updates)
