"""Simplicity-bias metrics (docs/method.md §3): S/S^c-randomization, feature dependence, the verdict.

All randomization happens in canonical coordinates: rows are rotated back (z = x Qᵀ), the chosen block's
columns are permuted *jointly* with one permutation over the whole evaluation split (so the block keeps its
internal structure and its marginal, but loses its relation to the label and to the other blocks), and the
rows are rotated forward again. Unlike the original (one permutation, no averaging; §12.17) every figure is
the mean and standard deviation over ``repeats`` independent permutations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sbengine.data.dataset import MASK_KIND, Dataset
from sbengine.device import generator
from sbengine.evaluation import predict_logits
from sbengine.progress import ProgressCallback, report

DEPENDENCE_METHODS = ("random", "swap")
# Per-coordinate dependence is reported when the input has at most this many coordinates.
MAX_COORDINATES_FOR_PER_COORDINATE = 512


@dataclass(frozen=True)
class VerdictThresholds:
    """The numbers the verdict's rules compare with, on ROC-AUC (binary tasks) or accuracy (otherwise).

    The defaults are the ones the verdict has always used; an audit may set its own (a pipeline that wants a
    stricter "exclusively"), and every audit result says which it used, so a verdict can be read back.
    """

    min_predictive: float = 0.60  # standard metric below this -> not predictive enough to audit
    chance_margin: float = 0.10  # randomized metric within chance ± this -> the model no longer predicts
    unchanged_margin: float = 0.02  # randomized metric at most this below standard -> that part is ignored
    mostly_ratio: float = 2.0  # one randomization costs more than this times the other -> "mostly"

    def __post_init__(self) -> None:
        for name, (low, high) in THRESHOLD_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(
                    f"verdict_thresholds.{name} must be a number in [{low}, {high}], got {value!r}"
                )
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_dict(cls, given: Mapping[str, Any] | None) -> VerdictThresholds:
        """The defaults overridden by ``given``; unknown keys are errors."""
        given = dict(given or {})
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ValueError(
                f"verdict_thresholds: unknown threshold {unknown[0]!r} (allowed: {', '.join(allowed)})"
            )
        return cls(**given)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# The closed range each threshold may take (the API's schema mirrors them).
THRESHOLD_RANGES: dict[str, tuple[float, float]] = {
    "min_predictive": (0.0, 1.0),
    "chance_margin": (0.0, 1.0),
    "unchanged_margin": (0.0, 1.0),
    "mostly_ratio": (1.0, 100.0),
}
DEFAULT_THRESHOLDS = VerdictThresholds()


class Canonical:
    """Maps a split between model inputs and canonical coordinates."""

    def __init__(self, dataset: Dataset, device: str):
        self.input_shape = dataset.input_shape
        self.q = (
            None
            if dataset.rotation is None
            else torch.as_tensor(dataset.rotation, dtype=torch.float64, device=device)
        )

    def to_canonical(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        return z if self.q is None else (z.double() @ self.q.T).float()

    def from_canonical(self, z: torch.Tensor) -> torch.Tensor:
        x = z if self.q is None else (z.double() @ self.q).float()
        return x.reshape(-1, *self.input_shape)


def permute_columns(z: torch.Tensor, columns: list[int], gen: torch.Generator) -> torch.Tensor:
    """Copy of ``z`` whose ``columns`` are moved jointly by one random row permutation."""
    perm = torch.randperm(z.shape[0], generator=gen).to(z.device)
    cols = torch.as_tensor(columns, device=z.device)
    out = z.clone()
    out[:, cols] = z[perm][:, cols]
    return out


def composite(z: torch.Tensor, selected: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mixed-random compositing (Xiao et al., ICLR 2021): row i keeps its own values outside its selected
    coordinates and takes the selected ones from row j = perm(i), one random row permutation:
    ``x' = m_i * x_i + (1 - m_i) * x_j`` with ``m_i`` the unselected mask. ``selected`` is ``(1, D)`` for a
    fixed block (then this is ``permute_columns``, draw for draw) or ``(n, D)`` for per-example regions."""
    if selected.shape[0] == 1:
        return permute_columns(z, torch.nonzero(selected[0]).flatten().tolist(), gen)
    perm = torch.randperm(z.shape[0], generator=gen).to(z.device)
    return torch.where(selected.to(z.device), z[perm], z)


def swap_selected(
    z: torch.Tensor, selected: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """``swap_columns`` for per-example regions: row i takes its selected coordinates from a random row of
    another class (where row i's own mask says)."""
    if selected.shape[0] == 1:
        return swap_columns(z, torch.nonzero(selected[0]).flatten().tolist(), y, gen)
    source = torch.arange(z.shape[0], device=z.device)
    for c in torch.unique(y):
        dst = torch.nonzero(y == c).flatten()
        src_pool = torch.nonzero(y != c).flatten()
        if src_pool.numel() == 0:
            continue
        pick = torch.randint(src_pool.numel(), (dst.numel(),), generator=gen).to(z.device)
        source[dst] = src_pool[pick]
    return torch.where(selected.to(z.device), z[source], z)


def swap_columns(z: torch.Tensor, columns: list[int], y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Class-swap counterfactual (§3.5): each row takes ``columns`` from a random row of another class."""
    out = z.clone()
    cols = torch.as_tensor(columns, device=z.device)
    classes = torch.unique(y)
    for c in classes:
        dst = torch.nonzero(y == c).flatten()
        src_pool = torch.nonzero(y != c).flatten()
        if src_pool.numel() == 0:
            continue
        pick = torch.randint(src_pool.numel(), (dst.numel(),), generator=gen).to(z.device)
        out[dst[:, None], cols] = z[src_pool[pick]][:, cols]
    return out


def roc_auc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """ROC-AUC by the Mann-Whitney statistic with average ranks for ties (== scikit-learn's roc_auc_score)."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty_like(s)
    # average rank of each run of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_score(logits: torch.Tensor) -> torch.Tensor | None:
    """logit₁ − logit₀, the score every AUC and histogram uses; None for more than two classes."""
    return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else None


def _summary(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "values": [float(v) for v in arr],
    }


def _metrics_of(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    score = binary_score(logits)
    return {
        "accuracy": (logits.argmax(1) == y).float().mean().item(),
        "auc": roc_auc(score, y) if score is not None else float("nan"),
        "loss": F.cross_entropy(logits, y).item(),
    }


def randomization(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    simple_blocks: list[int] | None = None,
    split: str = "test",
    repeats: int = 5,
    seed: int = 0,
    device: str = "cpu",
    histogram_bins: int = 20,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Standard, S-randomized and S^c-randomized AUC / accuracy / logit shift (docs/method.md §3.1-3.4)."""
    if not 1 <= repeats <= 1000:
        raise ValueError(f"repeats must be in [1, 1000], got {repeats}")
    simple = list(dataset.simple_blocks if simple_blocks is None else simple_blocks)
    complex_ = dataset.complement_blocks(simple)
    if not simple or not complex_:
        raise ValueError("simple_blocks must name at least one block and leave at least one block out")
    x_np, y_np = dataset.split(split)
    canon = Canonical(dataset, device)
    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    z = canon.to_canonical(x)
    logits = predict_logits(model, x, device=device)
    standard = _metrics_of(logits, y)
    score = binary_score(logits)
    score_std = float(score.std()) if score is not None else 1.0
    out: dict[str, Any] = {
        "split": split,
        "n": int(y.shape[0]),
        "repeats": repeats,
        "seed": seed,
        "simple_blocks": simple,
        "complex_blocks": complex_,
        "auc": standard["auc"],
        "accuracy": standard["accuracy"],
        "loss": standard["loss"],
    }
    first_scores: dict[str, torch.Tensor] = {}
    total = 2 * repeats
    for part_index, (part, blocks) in enumerate((("s", simple), ("sc", complex_))):
        selected = torch.from_numpy(dataset.selection(blocks, split))
        runs: dict[str, list[float]] = {"auc": [], "accuracy": [], "loss": [], "logit_shift": []}
        for r in range(repeats):
            gen = generator(seed, 10 + part_index, r)
            logits_r = predict_logits(model, canon.from_canonical(composite(z, selected, gen)), device=device)
            m = _metrics_of(logits_r, y)
            score_r = binary_score(logits_r)
            if score_r is not None:
                shift = (score_r - score).abs().mean().item() / (score_std + 1e-12)
                if r == 0:
                    first_scores[part] = score_r
            else:
                shift = (logits_r - logits).abs().mean().item()
            for key in ("auc", "accuracy", "loss"):
                runs[key].append(m[key])
            runs["logit_shift"].append(shift)
            report(progress, "randomization", part_index * repeats + r + 1, total)
        for key, values in runs.items():
            out[f"{part}_randomized_{key}"] = _summary(values)
    if score is not None:
        out["histograms"] = logit_histograms(
            {"standard": score, "s_randomized": first_scores["s"], "sc_randomized": first_scores["sc"]},
            y,
            bins=histogram_bins,
        )
    return out


def logit_histograms(scores: dict[str, torch.Tensor], y: torch.Tensor, *, bins: int = 20) -> dict[str, Any]:
    """Density histograms of logit₁ − logit₀ over true positives (Y = 1), on shared bin edges (§3.4)."""
    pos = {k: v[y == 1].detach().cpu().double().numpy() for k, v in scores.items()}
    lo = min(float(v.min()) for v in pos.values() if v.size)
    hi = max(float(v.max()) for v in pos.values() if v.size)
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    out: dict[str, Any] = {"bin_edges": edges.tolist()}
    for k, v in pos.items():
        out[k] = np.histogram(v, bins=edges, density=True)[0].tolist()
    return out


def feature_dependence(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    method: str = "random",
    groups: dict[str, list[int] | BlockGroup] | None = None,
    split: str = "test",
    seed: int = 0,
    sample_fraction: float = 1.0,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """Accuracy / AUC / loss after destroying each group of canonical coordinates (docs/method.md §3.5).

    ``groups`` maps a name to canonical coordinates; by default every block is one group, and every single
    coordinate is a group too when the input is small enough for that to be readable.
    """
    if method not in DEPENDENCE_METHODS:
        raise ValueError(f"method must be one of {', '.join(DEPENDENCE_METHODS)}, got {method!r}")
    if not 0 < sample_fraction <= 1:
        raise ValueError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
    groups = groups if groups is not None else default_groups(dataset)
    x_np, y_np = dataset.split(split)
    canon = Canonical(dataset, device)
    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    keep = torch.randperm(x.shape[0], generator=generator(seed, 20))[
        : max(2, round(sample_fraction * x.shape[0]))
    ]
    keep = keep.to(device)
    x, y = x[keep], y[keep]
    z = canon.to_canonical(x)
    rows = []
    kept = keep.cpu().numpy()
    for i, (name, columns) in enumerate(groups.items()):
        gen = generator(seed, 21, i)
        if isinstance(columns, BlockGroup):  # a region per example: its rows' own masks
            selected = torch.from_numpy(dataset.selection(list(columns.blocks), split, rows=kept))
            count: float = round(selected.sum(dim=1).double().mean().item(), 1)  # its mean size per example
            z_new = composite(z, selected, gen) if method == "random" else swap_selected(z, selected, y, gen)
        else:
            count = len(columns)
            z_new = (
                permute_columns(z, columns, gen) if method == "random" else swap_columns(z, columns, y, gen)
            )
        logits = predict_logits(model, canon.from_canonical(z_new), device=device)
        rows.append({"group": name, "coordinates": count, **_metrics_of(logits, y)})
        report(progress, f"dependence:{method}", i + 1, len(groups))
    return rows


@dataclass(frozen=True)
class BlockGroup:
    """A feature-dependence group given by blocks rather than coordinates: per-example regions."""

    blocks: tuple[int, ...]


def default_groups(dataset: Dataset) -> dict[str, list[int] | BlockGroup]:
    """Every block, then (small inputs) every coordinate, named by its column where the dataset has names."""
    groups: dict[str, list[int] | BlockGroup] = {
        f"block {i}: {b.name}": BlockGroup((i,)) if b.kind == MASK_KIND else list(b.indices)
        for i, b in enumerate(dataset.blocks)
    }
    if dataset.num_features <= MAX_COORDINATES_FOR_PER_COORDINATE:
        names = dataset.feature_names
        groups.update(
            {
                f"coordinate {c}" + (f" ({names[c]})" if names else ""): [c]
                for c in range(dataset.num_features)
            }
        )
    return groups


def classify(
    standard: float,
    s_randomized: float,
    sc_randomized: float,
    *,
    chance: float = 0.5,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
) -> str:
    """Category of reliance from one metric measured standard, S-randomized and S^c-randomized.

    With t = ``thresholds``, in this order:

    - ``not_predictive``: standard < t.min_predictive.
    - ``exclusively_s``: S-randomized within t.chance_margin of chance and S^c-randomized at most
      t.unchanged_margin below standard — the paper's "relies exclusively on S and is invariant to S^c"
      (Table 1).
    - ``exclusively_sc``: the mirror image.
    - ``mostly_s`` / ``mostly_sc``: one randomization costs more than t.mostly_ratio times as much as the
      other (and more than t.unchanged_margin).
    - ``both``: otherwise.
    """
    t = thresholds
    if standard < t.min_predictive:
        return "not_predictive"
    drop_s, drop_sc = standard - s_randomized, standard - sc_randomized
    if abs(s_randomized - chance) <= t.chance_margin and drop_sc <= t.unchanged_margin:
        return "exclusively_s"
    if abs(sc_randomized - chance) <= t.chance_margin and drop_s <= t.unchanged_margin:
        return "exclusively_sc"
    if drop_s > t.mostly_ratio * max(drop_sc, 0.0) and drop_s > t.unchanged_margin:
        return "mostly_s"
    if drop_sc > t.mostly_ratio * max(drop_s, 0.0) and drop_sc > t.unchanged_margin:
        return "mostly_sc"
    return "both"


VERDICT_TEXT = {
    "not_predictive": "the model is not predictive on this data (standard {metric} {std:.3f}); "
    "nothing to audit",
    "exclusively_s": "relies exclusively on S ({s_names}): randomizing S drops {metric} from {std:.3f} to "
    "{s:.3f} (chance), randomizing S^c leaves it at {sc:.3f} — simplicity bias",
    "exclusively_sc": "relies exclusively on S^c ({sc_names}): randomizing S^c drops {metric} "
    "from {std:.3f} to {sc:.3f} (chance), randomizing S leaves it at {s:.3f}",
    "mostly_s": "relies mostly on S ({s_names}): randomizing S drops {metric} from {std:.3f} to {s:.3f}, "
    "randomizing S^c to {sc:.3f}",
    "mostly_sc": "relies mostly on S^c ({sc_names}): randomizing S^c drops {metric} from {std:.3f} "
    "to {sc:.3f}, randomizing S to {s:.3f}",
    "both": "relies on both S ({s_names}) and S^c ({sc_names}): {metric} {std:.3f}, S-randomized {s:.3f}, "
    "S^c-randomized {sc:.3f}",
}


def verdict(
    randomization_result: dict[str, Any], dataset: Dataset, thresholds: VerdictThresholds = DEFAULT_THRESHOLDS
) -> dict[str, str]:
    """Plain-language verdict from a ``randomization`` result: AUC for binary tasks, else accuracy."""
    r = randomization_result
    use_auc = not math.isnan(r["auc"])
    metric = "AUC" if use_auc else "accuracy"
    key = "auc" if use_auc else "accuracy"
    chance = 0.5 if use_auc else 1.0 / dataset.num_classes
    std, s, sc = r[key], r[f"s_randomized_{key}"]["mean"], r[f"sc_randomized_{key}"]["mean"]
    code = classify(std, s, sc, chance=chance, thresholds=thresholds)
    text = VERDICT_TEXT[code].format(
        metric=metric,
        std=std,
        s=s,
        sc=sc,
        s_names=", ".join(dataset.blocks[i].name for i in r["simple_blocks"]),
        sc_names=", ".join(dataset.blocks[i].name for i in r["complex_blocks"]),
    )
    return {"code": code, "text": text}
