"""Ensembles (docs/method.md §6): independently trained members and the ways to combine them.

The paper's point is that averaging many simplicity-biased models does not remove the bias: every member
relies on the same simple feature, so the ensemble does too (``ensemble_audit_summary`` shows it per member
and for the ensemble). Members differ only in their seed, which drives both the initialisation and the
shuffling (``member_seeds``). Small same-architecture members train together in one vectorized pass
(``sbengine.ensemble_train``) with the same result as training them one by one.

Combiners: ``logits`` (the paper's EnsembleAverage), ``probs`` (its ``use_softmax`` variant), and two
trained heads on the stacked member logits, ``linear`` and ``mlp``. Unlike the original EnsembleLinear,
whose all-1/(C·M) initialisation gives every class the same logit (§12.18), both heads start as the exact
logit average and are fitted on the validation split, never on test (§12.3).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from sbengine.data.dataset import Dataset
from sbengine.device import cpu_threads_for, generator, resolve_device, seed_everything
from sbengine.ensemble_train import train_stacked
from sbengine.evaluation import accuracy_and_loss, predict_logits
from sbengine.metrics import DEFAULT_THRESHOLDS, VerdictThresholds, randomization, verdict
from sbengine.models import build_model, resolve_architecture
from sbengine.progress import Progress, ProgressCallback
from sbengine.train import TrainConfig, TrainResult, train

COMBINES = ("logits", "probs", "linear", "mlp")
VECTORIZE = ("auto", "always", "never")
MAX_ENSEMBLE_SIZE = 1000
# Member i's seed is seed + i·SEED_STRIDE (mod SEED_MODULUS): see member_seeds.
SEED_STRIDE = 1_000_003
SEED_MODULUS = 2**31 - 1


def member_seeds(seed: int, size: int) -> list[int]:
    """Seed of each member: ``(seed + i * 1_000_003) mod (2**31 - 1)`` for i = 0 .. size-1.

    Member i's seed is used for its initialisation *and* its shuffling, exactly as a single model trained
    with that seed. Member 0's seed is ``seed`` itself (for 0 <= seed < 2**31 - 1), so an ensemble's first
    member is the model a plain run with the same seed trains. The modulus is prime and the stride is not a
    multiple of it, so the seeds within an ensemble are distinct, and ensembles with nearby seeds (0, 1, 2,
    ...) share no member (unlike ``seed + i``, where seeds 0 and 1 would share all but one).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_ENSEMBLE_SIZE:
        raise ValueError(f"ensemble size must be an integer in [1, {MAX_ENSEMBLE_SIZE}], got {size!r}")
    return [(seed + i * SEED_STRIDE) % SEED_MODULUS for i in range(size)]


def can_vectorize(architecture: dict[str, Any]) -> bool:
    """True for architectures whose members can train in one vmap'ed pass with results identical to
    one-by-one training: FCNs without dropout / batch norm (dropout would need per-member random streams,
    batch norm per-member running statistics) and 1-D CNNs."""
    config = resolve_architecture(architecture)
    if config["name"] == "fcn":
        return config["dropout"] == 0 and config["input_dropout"] == 0 and not config["batch_norm"]
    return config["name"] == "cnn1d"


def train_ensemble(
    architecture: dict[str, Any],
    dataset: Dataset,
    config: TrainConfig,
    *,
    size: int,
    seed: int,
    device: str = "cpu",
    vectorize: str = "auto",
    progress: ProgressCallback | None = None,
) -> tuple[list[nn.Module], list[TrainResult]]:
    """Train ``size`` members of ``architecture``; member i is exactly what
    ``seed_everything(s_i); m = build_model(...); train(m, dataset, config, seed=s_i)`` produces, with
    ``s_i = member_seeds(seed, size)[i]``.

    ``vectorize``: "auto" trains them together when ``can_vectorize`` and size > 1 (and no adversarial
    training), else one after another; "always" insists (ValueError when impossible); "never" is one by one.
    """
    if vectorize not in VECTORIZE:
        raise ValueError(f"vectorize must be one of {', '.join(VECTORIZE)}, got {vectorize!r}")
    seeds = member_seeds(seed, size)
    config.validate()
    possible = can_vectorize(architecture) and config.adversarial is None
    if vectorize == "always" and not possible:
        raise ValueError(
            f"members of {resolve_architecture(architecture)['name']!r} cannot be trained vectorized "
            "(only fcn without dropout/batch_norm and cnn1d, without adversarial training)"
        )
    models = []
    for s in seeds:
        seed_everything(s)
        models.append(
            build_model(architecture, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
        )
    if vectorize == "always" or (vectorize == "auto" and possible and size > 1):
        return models, train_stacked(models, dataset, config, seeds=seeds, device=device, progress=progress)
    results = [
        train(model, dataset, config, seed=s, device=device, progress=_member_progress(progress, i, size))
        for i, (model, s) in enumerate(zip(models, seeds, strict=True))
    ]
    return models, results


def _member_progress(progress: ProgressCallback | None, index: int, size: int) -> ProgressCallback | None:
    """Map member ``index``'s own progress onto the whole ensemble's (members one after another)."""
    if progress is None:
        return None

    def forward(p: Progress) -> None:
        total = p.total or 1
        progress(
            Progress(
                stage=p.stage,
                step=index * total + p.step,
                total=size * total,
                metrics={**p.metrics, "member": index},
                message=p.message,
            )
        )

    return forward


def _average_weight(num_classes: int, size: int) -> torch.Tensor:
    """(C, C·M) weight that maps class-major stacked logits to their per-class mean: row c holds 1/M at
    columns c·M .. c·M + M - 1 (class c of every member)."""
    return torch.kron(torch.eye(num_classes), torch.full((1, size), 1.0 / size))


class AveragingLinearHead(nn.Linear):
    """Linear(C·M -> C) on class-major stacked member logits, initialised to the exact average (§12.18)."""

    def __init__(self, num_classes: int, size: int):
        super().__init__(num_classes * size, num_classes)
        with torch.no_grad():
            self.weight.copy_(_average_weight(num_classes, size))
            self.bias.zero_()


class AveragingMLPHead(nn.Module):
    """A residual one-hidden-layer MLP (hidden = C·M) on class-major stacked member logits.

    output = average_linear(z) + out(relu(hidden(z))), where ``average_linear`` starts as the exact average
    and ``out`` starts at zero, so the head starts as the average and learns non-linear corrections. (An
    identity-initialised hidden layer cannot work: ReLU would cut the negative logits.) The hidden layer is
    drawn from its own generator, not the global RNG, so building an ensemble never shifts other streams.
    """

    def __init__(self, num_classes: int, size: int):
        super().__init__()
        features = num_classes * size
        self.average = AveragingLinearHead(num_classes, size)
        self.hidden = nn.Linear(features, features)
        self.out = nn.Linear(features, num_classes)
        bound = 1.0 / math.sqrt(features)  # nn.Linear's default range, from a fixed stream
        gen = generator(0, 30)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.rand(features, features, generator=gen) * 2 * bound - bound)
            self.hidden.bias.copy_(torch.rand(features, generator=gen) * 2 * bound - bound)
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.average(z) + self.out(torch.relu(self.hidden(z)))


def _num_classes_of(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            "cannot infer the number of classes from the members (no Linear layer); pass num_classes"
        )
    return linears[-1].out_features


class Ensemble(nn.Module):
    """Members plus a combiner; ``forward(x)`` returns (batch, C) logits.

    - ``logits``: mean of the members' logits (the paper's EnsembleAverage).
    - ``probs``: log of the mean of the members' softmax probabilities, so argmax and logit₁ − logit₀ (AUC)
      behave like logits.
    - ``linear`` / ``mlp``: a trained head (``AveragingLinearHead`` / ``AveragingMLPHead``) on the member
      logits stacked class-major (class 0 of every member, then class 1, ...; §6); both start as the
      ``logits`` average until ``fit_head`` trains them.

    ``num_classes`` is inferred from the members' last Linear layer when not given.
    """

    def __init__(self, members: list[nn.Module], combine: str = "logits", *, num_classes: int | None = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.num_classes = num_classes if num_classes is not None else _num_classes_of(members[0])
        self.head: nn.Module | None = None
        if combine == "linear":
            self.head = AveragingLinearHead(self.num_classes, len(members))
        elif combine == "mlp":
            self.head = AveragingMLPHead(self.num_classes, len(members))

    def member_features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, C·M) member logits stacked class-major: column c·M + m is member m's logit for class c."""
        return torch.stack([m(x) for m in self.members], dim=2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is not None:
            return self.head(self.member_features(x))
        logits = torch.stack([m(x) for m in self.members])
        if self.combine == "logits":
            return logits.mean(0)
        return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(len(self.members))


def member_feature_dataset(ensemble: Ensemble, dataset: Dataset, *, device: str = "cpu") -> Dataset:
    """``dataset`` with every split's inputs replaced by the stacked member logits (members frozen, eval
    mode): what a head trains on, computed once instead of at every step."""
    splits = {}
    for name, (x, y) in dataset.splits.items():
        logits = [predict_logits(m, x, device=device) for m in ensemble.members]
        splits[name] = (torch.stack(logits, dim=2).flatten(1).cpu().numpy().astype(np.float32), y)
    features = ensemble.num_classes * len(ensemble.members)
    return Dataset(
        name=f"{dataset.name} (member logits)",
        splits=splits,
        input_shape=(features,),
        num_classes=dataset.num_classes,
        blocks=[],
        simple_blocks=[],
        rotation=None,
        seed=dataset.seed,
        spec={"member_logits_of": dataset.spec},
    )


def fit_head(
    ensemble: Ensemble,
    dataset: Dataset,
    config: TrainConfig,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train only the head of a ``linear`` / ``mlp`` ensemble on precomputed member logits (§6's
    fit_classifier) and keep the best-on-validation head.

    Selection is always on the validation split (``select`` is forced to "best_val"; a dataset without one
    is refused), and the starting point, the plain average, is a candidate too: if no trained head beats
    it on validation accuracy the average is kept (``selected_step`` 0). The test split only appears in the
    reported final metrics.
    """
    if ensemble.head is None:
        raise ValueError(f"combine {ensemble.combine!r} has no head to fit (use 'linear' or 'mlp')")
    if "val" not in dataset.splits:
        raise ValueError("fitting an ensemble head needs a validation split (selection never uses test)")
    device = resolve_device(device)
    ensemble.to(device).eval()
    with cpu_threads_for(ensemble, device):
        features = member_feature_dataset(ensemble, dataset, device=device)
    head = ensemble.head
    start_state = copy.deepcopy(head.state_dict())
    start_val = accuracy_and_loss(
        predict_logits(head, features.split("val")[0], device=device),
        torch.from_numpy(features.split("val")[1]),
    )[0]
    result = train(
        head, features, replace(config, select="best_val"), seed=seed, device=device, progress=progress
    )
    if result.metrics["val_accuracy"] < start_val:
        head.load_state_dict(start_state)
        result.selected_step = 0
        for name, (x, y) in features.splits.items():
            result.metrics[f"{name}_accuracy"], result.metrics[f"{name}_loss"] = accuracy_and_loss(
                predict_logits(head, x, device=device), torch.from_numpy(y)
            )
    head.eval()
    return result


def _nan_to_none(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v


def _reliance(
    model: nn.Module, dataset: Dataset, *, simple_blocks, repeats, seed, device, thresholds: VerdictThresholds
) -> dict[str, Any]:
    r = randomization(model, dataset, simple_blocks=simple_blocks, repeats=repeats, seed=seed, device=device)
    out: dict[str, Any] = {"test_accuracy": r["accuracy"], "auc": _nan_to_none(r["auc"])}
    for key in ("auc", "accuracy"):
        for part in ("s", "sc"):
            summary = r[f"{part}_randomized_{key}"]
            out[f"{part}_randomized_{key}"] = {
                "mean": _nan_to_none(summary["mean"]),
                "std": _nan_to_none(summary["std"]),
            }
    out["verdict_code"] = verdict(r, dataset, thresholds)["code"]
    return out


def ensemble_audit_summary(
    ensemble: Ensemble,
    members: list[nn.Module],
    dataset: Dataset,
    *,
    simple_blocks: list[int] | None = None,
    repeats: int = 5,
    seed: int = 0,
    device: str = "cpu",
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Test accuracy, standard / S-randomized / S^c-randomized AUC and accuracy, and the reliance verdict of
    every member and of the ensemble (same permutations for all), so a user sees at a glance whether the
    ensemble is as simplicity-biased as its members (docs/method.md §6, App. E.1). JSON-able."""
    device = resolve_device(device)
    ensemble.to(device).eval()
    for m in members:
        m.to(device).eval()
    kwargs = {
        "simple_blocks": simple_blocks,
        "repeats": repeats,
        "seed": seed,
        "device": device,
        "thresholds": thresholds,
    }
    with cpu_threads_for(ensemble, device):
        rows = [_reliance(m, dataset, **kwargs) for m in members]
        whole = _reliance(ensemble, dataset, **kwargs)
    codes = Counter(r["verdict_code"] for r in rows)
    common, count = codes.most_common(1)[0]
    key = "auc" if whole["auc"] is not None else "accuracy"
    member_s = float(np.mean([r[f"s_randomized_{key}"]["mean"] for r in rows]))
    member_sc = float(np.mean([r[f"sc_randomized_{key}"]["mean"] for r in rows]))
    text = (
        f"ensemble of {len(members)} ({ensemble.combine}): {whole['verdict_code']} (S-randomized {key} "
        f"{whole[f's_randomized_{key}']['mean']:.3f}, "
        f"S^c-randomized {whole[f'sc_randomized_{key}']['mean']:.3f}); "
        f"members: {count} of {len(members)} {common} (mean S-randomized {key} {member_s:.3f}, "
        f"S^c-randomized {member_sc:.3f})"
    )
    return {
        "size": len(members),
        "combine": ensemble.combine,
        "seed": seed,
        "repeats": repeats,
        "members": rows,
        "ensemble": whole,
        "member_verdicts": dict(codes),
        "same_verdict_as_members": whole["verdict_code"] == common,
        "summary": text,
    }
