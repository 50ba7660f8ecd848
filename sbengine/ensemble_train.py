"""Training several same-architecture members in one vectorized pass (torch.func stacked parameters + vmap).

Small models spend much of a step in Python and dispatch overhead, so M members trained one after another
pay that overhead M times. Here the members' parameters are stacked along a leading "member" dimension and
one ``vmap``'ed forward/backward serves them all. The result must be what ``sbengine.train.train`` gives
each member on its own, so this loop mirrors ``train``'s semantics step for step:

- member *i* sees exactly its own batches: its permutation ``train.epoch_order(n, seed_i, epoch)`` is gathered
  into an (M, B, ...) batch, and the loss is the *sum* of the per-member mean losses, so each member's slice
  of the stacked gradient is exactly its own gradient;
- one standard optimizer (``train.make_optimizer``) steps the stacked leaves; SGD (momentum, weight decay),
  Adam and RMSprop updates are elementwise, so this equals one optimizer per member;
- evaluation, stop rule, patience, divergence, ``best_val`` snapshots and the final evaluation are decided
  by one ``train_rules.RunTracker`` per member, the very code ``train`` uses; evaluation runs each member's
  weights through its own module (it is arithmetic-bound, so vmap would not make it cheaper);
- a member that stops gets its selected weights in its own module at its own stop step and is dropped from
  the stack together with its optimizer state, so later updates of the others can neither leak into it
  nor pay for it;
- adversarial training (docs/method.md §7.2) is refused: PGD runs on one module and has no stacked form here,
  so ``ensemble.train_ensemble`` trains adversarial members one after another with ``train``.

On CPU the weights come out bit for bit equal to one-by-one training; elsewhere batched and single matrix
products may round differently (≈1e-7 per step).
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from sbengine.data.dataset import Dataset
from sbengine.device import cpu_threads_for, resolve_device
from sbengine.progress import ProgressCallback, report
from sbengine.train import TrainConfig, _Split, epoch_order, lr_at_epoch, make_optimizer
from sbengine.train_rules import BatchLosses, RunTracker, TrainResult


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
    model holds its selected weights, in eval mode.

    Adversarial training is refused: its PGD step runs on one module (``sbengine.attacks.pgd``) and has no
    stacked form, so ``ensemble.train_ensemble`` trains such members one after another with ``train``."""
    config.validate()
    if config.adversarial is not None:
        raise ValueError("adversarial training cannot be vectorized; train the members one after another")
    if len(seeds) != len(models) or not models:
        raise ValueError("train_stacked needs one seed per model and at least one model")
    device = resolve_device(device)
    for model in models:
        model.to(device)
    stack = _Stack(models, config)
    with cpu_threads_for(models[0], device, config.batch_size):  # per-member work decides, as in train()
        trackers, seconds = _train_stacked(
            stack, models, seeds, dataset, config, device=device, progress=progress
        )
        return [t.result(m, dataset, seconds=s) for t, m, s in zip(trackers, models, seconds, strict=True)]


def _train_stacked(stack: _Stack, models, seeds, dataset, config: TrainConfig, *, device, progress):
    """The update loop of ``train`` for all rows of ``stack`` at once. Member *i*'s ``RunTracker`` decides
    when it is evaluated, when it stops and which weights its module ends up holding; returns the trackers
    and the seconds charged to each member."""
    train_split = _Split(*dataset.split("train"), device)
    batch_size = config.batch_size
    batches_per_epoch = math.ceil(train_split.n / batch_size)
    seconds = [0.0] * len(models)
    segment_start = time.perf_counter()  # the time since then is shared equally by the members in the stack

    def clock(i: int):
        return lambda: seconds[i] + (time.perf_counter() - segment_start) / len(stack.rows)

    trackers = [
        RunTracker(
            config,
            train_data=(train_split.x, train_split.y),
            val=dataset.splits.get("val"),
            batches_per_epoch=batches_per_epoch,
            device=device,
            clock=clock(i),
        )
        for i in range(len(models))
    ]
    max_updates = trackers[0].max_updates
    losses = BatchLosses(len(models), device)
    step = 0
    progress_every = max(1, min(config.eval_every, 100))
    perms, perm_epoch = None, -1
    while True:
        training = list(stack.rows)  # member index of each row
        stopping: dict[int, str] = {}
        evaluated = False
        for r, i in enumerate(training):
            if trackers[i].due(step):
                models[i].load_state_dict(stack.state_of(r))
                trackers[i].evaluate(models[i], step, batch_loss=losses.mean(r))
                evaluated = True
            reason = trackers[i].stop_reason(step)
            if reason is not None:
                stopping[r] = reason
        if evaluated:  # due for every row alike, as the members share their steps
            losses.reset()
        for r, reason in stopping.items():
            i = training[r]
            models[i].load_state_dict(stack.state_of(r))
            trackers[i].finish(models[i], step, reason, batch_loss=losses.mean(r))
        rows = [trackers[i].history[-1] for i in training if trackers[i].history[-1]["step"] == step]
        if rows:
            report(
                progress,
                "train",
                step,
                max_updates,
                members_training=len(training),
                train_accuracy=sum(row["train_accuracy"] for row in rows) / len(rows),
            )
        if stopping:
            now = time.perf_counter()
            for i in training:
                seconds[i] += (now - segment_start) / len(training)
            segment_start = now
            keep = [r for r in range(len(training)) if r not in stopping]
            if not keep:
                return trackers, seconds
            stack.keep(keep, lr_at_epoch(config, step // batches_per_epoch))
            losses.keep(keep)
            if perms is not None:
                perms = perms.index_select(0, torch.as_tensor(keep))
        epoch, position = divmod(step, batches_per_epoch)
        if perm_epoch != epoch:
            perms = torch.stack([epoch_order(train_split.n, seeds[i], epoch) for i in stack.rows])
            perm_epoch = epoch
            for group in stack.optimizer.param_groups:
                group["lr"] = lr_at_epoch(config, epoch)
        idx = perms[:, position * batch_size : (position + 1) * batch_size]
        xb, yb = train_split.batch(idx.reshape(-1))  # one gather for every member's own batch
        xb, yb = xb.view(*idx.shape, *xb.shape[1:]), yb.view(idx.shape)
        stack.optimizer.zero_grad(set_to_none=True)
        batch_losses = stack.losses(xb, yb)
        batch_losses.sum().backward()
        stack.optimizer.step()
        losses.add(batch_losses)
        step += 1
        if step % progress_every == 0:
            report(progress, "train", step, max_updates)
