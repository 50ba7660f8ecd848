"""Report sections and figure captions for audits finished before the worker stored sections (migration
0006), when the service still tabulated each check itself.

Those audits have results but no sections, and the service cannot ask the engine for them (it never imports
it), so this module keeps the tables and captions the service drew then, for the six checks that existed.
It is frozen: its input is results that will never be written again, and a new check never needs an entry
here (its audits always have stored sections). tests/service/test_reports.py checks that it draws exactly
what the engine's check modules store for the same results, so an old report reads like a new one. It can
go once no audit from before 0006 is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from service.reports.sections import DASH, Section, Table, mean_std, num, raw_section

log = logging.getLogger("sbaudit.api")


def _blocks_text(indices: Any) -> str:
    return ", ".join(str(i) for i in indices) if isinstance(indices, list) and indices else DASH


def _randomization(r: dict[str, Any]) -> Section:
    rows = [
        ["AUC", num(r.get("auc")), mean_std(r.get("s_randomized_auc")), mean_std(r.get("sc_randomized_auc"))],
        ["accuracy", num(r.get("accuracy")), mean_std(r.get("s_randomized_accuracy")),
         mean_std(r.get("sc_randomized_accuracy"))],
        ["loss", num(r.get("loss")), mean_std(r.get("s_randomized_loss")),
         mean_std(r.get("sc_randomized_loss"))],
        ["logit shift", DASH, mean_std(r.get("s_randomized_logit_shift")),
         mean_std(r.get("sc_randomized_logit_shift"))],
    ]  # fmt: skip
    summary = (
        f"Split {r.get('split', DASH)}, {num(r.get('n'))} examples, {num(r.get('repeats'))} permutations "
        f"per figure (mean ± std). S = blocks {_blocks_text(r.get('simple_blocks'))}, "
        f"S^c = blocks {_blocks_text(r.get('complex_blocks'))}."
    )
    columns = ["metric", "standard", "S-randomized", "S^c-randomized"]
    table = Table("Standard, S-randomized and S^c-randomized", columns, rows)
    return Section("randomization", "S / S^c randomization", summary, [table])


def _dependence(by_method: dict[str, Any]) -> Section:
    section = Section(
        "feature_dependence",
        "Feature dependence",
        "Accuracy and AUC after destroying one group of canonical coordinates: low values mark what the "
        "model depends on.",
    )
    columns = ["group", "coordinates", "accuracy", "AUC"]
    for method, rows in by_method.items():
        cells = [
            [str(r["group"]), num(r.get("coordinates")), num(r.get("accuracy")), num(r.get("auc"))]
            for r in rows
        ]
        blocks = [c for c in cells if not c[0].startswith("coordinate ")]
        coordinates = [c for c in cells if c[0].startswith("coordinate ")]
        section.tables.append(Table(f"{method}: per block", columns, blocks))
        if coordinates:
            section.tables.append(Table(f"{method}: per coordinate", columns, coordinates, collapsed=True))
    return section


def _generalization(g: dict[str, Any]) -> Section:
    rows = [
        ["accuracy", num(g.get("accuracy"))],
        ["Bayes accuracy of S alone", num(g.get("bayes_accuracy_s"))],
        ["Bayes accuracy of S^c alone", num(g.get("bayes_accuracy_sc"))],
        ["Bayes accuracy of all blocks", num(g.get("bayes_accuracy_all"))],
        ["sub-optimal (margin " + num(g.get("margin")) + ")", num(g.get("suboptimal"))],
    ]
    return Section("generalization", "Generalization", g.get("summary"), [Table("", ["", "value"], rows)])


def _share_rows(shares: dict[str, Any]) -> list[list[str]]:
    return [[str(name), mean_std(value)] for name, value in shares.items()]


def _pgd(p: dict[str, Any]) -> Section:
    config = p.get("config") or {}
    rows = [
        ["clean accuracy", num(p.get("clean_accuracy"))],
        ["accuracy under attack", num(p.get("accuracy"))],
        ["mean ℓ2 norm of the perturbation", num(p.get("mean_l2_norm"))],
        ["mean ℓ∞ norm of the perturbation", num(p.get("mean_linf_norm"))],
        ["share on S", mean_std({"mean": p.get("simple_share"), "std": p.get("simple_share_std")})],
    ]
    summary = (
        f"{config.get('norm', DASH)} PGD, eps {num(config.get('eps'))}, {num(config.get('steps'))} steps, "
        f"{num(config.get('restarts'))} restart(s), loss {config.get('loss', DASH)}; "
        f"split {p.get('split', DASH)}, {num(p.get('n'))} examples."
    )
    shares = Table(
        "Share of the perturbation per block", ["block", "share"], _share_rows(p.get("block_share") or {})
    )
    return Section("pgd", "Instance-wise PGD", summary, [Table("", ["", "value"], rows), shares])


def _uap(u: dict[str, Any]) -> Section:
    norm = u.get("uap_norm") or {}
    rows = [
        ["clean accuracy", num(u.get("clean_accuracy"))],
        ["accuracy under the UAP", num(u.get("accuracy"))],
        ["accuracy under the UAP on the fit split", num(u.get("fit_accuracy"))],
        ["fooling rate", num(u.get("fooling_rate"))],
        ["ℓ2 / ℓ∞ norm", f"{num(norm.get('l2'))} / {num(norm.get('linf'))}"],
        ["share on S", num(u.get("simple_share"))],
    ]
    summary = (
        f"{u.get('method', DASH)} method, {u.get('norm', DASH)} budget {num(u.get('eps'))}, fitted on "
        f"{u.get('fit_split', DASH)}, evaluated on {u.get('eval_split', DASH)}."
    )
    shares = Table("Share of the UAP per block", ["block", "share"], _share_rows(u.get("block_share") or {}))
    return Section(
        "uap", "Universal adversarial perturbation", summary, [Table("", ["", "value"], rows), shares]
    )


def _ensemble(e: dict[str, Any]) -> Section:
    columns = ["", "test accuracy", "S-randomized AUC", "S^c-randomized AUC", "reliance"]

    def row(name: str, r: dict[str, Any]) -> list[str]:
        return [name, num(r.get("test_accuracy")), mean_std(r.get("s_randomized_auc")),
                mean_std(r.get("sc_randomized_auc")), str(r.get("verdict_code") or DASH)]  # fmt: skip

    rows = [row(f"member {i}", m) for i, m in enumerate(e.get("members") or [])]
    rows.append(row("ensemble", e.get("ensemble") or {}))
    return Section("ensemble", "Ensemble", e.get("summary"), [Table("", columns, rows)])


BUILDERS: dict[str, Callable[[Any], Section]] = {
    "randomization": _randomization,
    "feature_dependence": _dependence,
    "generalization": _generalization,
    "pgd": _pgd,
    "uap": _uap,
    "ensemble": _ensemble,
}

# The figures those checks drew, (title, caption), in the order the report showed them.
CAPTIONS: dict[str, tuple[str, str]] = {
    "logit_histograms": (
        "Logits under randomization",
        "Density of logit₁ − logit₀ over the positive examples: standard (filled), S-randomized (red) and "
        "S^c-randomized (blue). Under simplicity bias the S-randomized histogram collapses across zero while "
        "the S^c-randomized one matches the standard: the model reads its decision off S alone.",
    ),
    "decision_boundary": (
        "Decision boundary: S against S^c",
        "Predicted class while one S coordinate and one S^c coordinate sweep a grid (the other coordinates "
        "come from real examples), data points on top. A boundary that only moves along the S axis means "
        "the model ignores the S^c coordinate.",
    ),
    "dependence_random": (
        "Feature dependence (random permutation)",
        "Accuracy after permuting each block (and each coordinate, for small inputs) across examples. A low "
        "bar marks a group the model depends on; under simplicity bias only S's bars drop, to chance.",
    ),
    "dependence_swap": (
        "Feature dependence (class swap)",
        "Accuracy after giving each example the group's values from an example of another class. A bar "
        "near zero means that group alone decides the prediction; bars that stay high are ignored groups.",
    ),
    "pgd_heatmap": (
        "PGD perturbations in canonical coordinates",
        "One row per example: its PGD perturbation, scaled to its largest entry (red positive, blue "
        "negative); vertical lines separate blocks. A simplicity-biased model is attacked through S: the "
        "mass sits in S's columns.",
    ),
    "pgd_block_share": (
        "Share of the PGD perturbation per block",
        "Mean share of the perturbation's ℓ2 norm on each block. Mass concentrated on S says the cheapest "
        "way to flip the model goes through the simple features.",
    ),
    "uap_vector": (
        "Universal adversarial perturbation",
        "The one perturbation added to every example, in canonical coordinates, scaled to its largest entry. "
        "A UAP that lives on S alone shows that one direction in S flips most predictions.",
    ),
    "uap_block_share": (
        "Share of the UAP per block",
        "Share of the universal perturbation's ℓ2 norm on each block. Under simplicity bias nearly all of "
        "it lies on S.",
    ),
    "ensemble_members": (
        "Members against the ensemble",
        "Test accuracy and S-/S^c-randomized AUC of every member and of the ensemble. If the ensemble's "
        "S-randomized AUC sits at chance like its members', ensembling did not remove the simplicity bias.",
    ),
}


def sections(results: dict[str, Any] | None) -> list[Section]:
    """One section per check, in the order the checks ran; what cannot be tabulated is shown raw."""
    out = []
    for check, value in (results or {}).items():
        build = BUILDERS.get(check)
        try:
            if build is None:
                raise TypeError("no table for this check")
            out.append(build(value))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.warning("report: the %s results could not be tabulated: %s", check, exc)
            out.append(raw_section(check, value))
    return out
