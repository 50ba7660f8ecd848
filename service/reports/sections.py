"""Each check's results (sbengine/audit.py ``run_audit``) as titled tables of formatted numbers.

Numbers are shown with three decimals, and as ``mean ± std`` where the engine repeated a measurement
(randomization, per-example PGD shares). A result this version cannot tabulate (a newer check, an
unexpected shape) is shown as its raw JSON instead: a report never fails because of one section.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sbaudit.api")

DASH = "—"
MAX_RAW_CHARS = 20_000
# Values too bulky for a table (plotted instead): left out of the raw JSON fallback.
BULKY_KEYS = ("histograms", "heatmap", "uap", "boundary", "values")


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]
    collapsed: bool = False  # long per-coordinate tables start folded (<details>)


@dataclass
class Section:
    check: str
    title: str
    summary: str | None = None
    tables: list[Table] = field(default_factory=list)
    raw: str | None = None


def num(value: Any, digits: int = 3) -> str:
    """``0.503``; integers as they are; missing values and non-numbers as a dash."""
    if isinstance(value, bool) or value is None:
        return DASH if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return DASH


def mean_std(value: Any) -> str:
    """``mean ± std`` for a ``{"mean", "std"}`` summary, the number itself otherwise."""
    if isinstance(value, dict):
        if value.get("std") is None:
            return num(value.get("mean"))
        return f"{num(value.get('mean'))} ± {num(value.get('std'))}"
    return num(value)


def blocks_text(indices: Any) -> str:
    return ", ".join(str(i) for i in indices) if isinstance(indices, list) and indices else DASH


def randomization_section(r: dict[str, Any]) -> Section:
    rows = [
        ["AUC", num(r.get("auc")), mean_std(r.get("s_randomized_auc")), mean_std(r.get("sc_randomized_auc"))],
        [
            "accuracy",
            num(r.get("accuracy")),
            mean_std(r.get("s_randomized_accuracy")),
            mean_std(r.get("sc_randomized_accuracy")),
        ],
        [
            "loss",
            num(r.get("loss")),
            mean_std(r.get("s_randomized_loss")),
            mean_std(r.get("sc_randomized_loss")),
        ],
        [
            "logit shift",
            DASH,
            mean_std(r.get("s_randomized_logit_shift")),
            mean_std(r.get("sc_randomized_logit_shift")),
        ],
    ]
    summary = (
        f"Split {r.get('split', DASH)}, {num(r.get('n'))} examples, {num(r.get('repeats'))} permutations "
        f"per figure (mean ± std). S = blocks {blocks_text(r.get('simple_blocks'))}, "
        f"S^c = blocks {blocks_text(r.get('complex_blocks'))}."
    )
    table = Table(
        "Standard, S-randomized and S^c-randomized",
        ["metric", "standard", "S-randomized", "S^c-randomized"],
        rows,
    )
    return Section("randomization", "S / S^c randomization", summary, [table])


def dependence_section(by_method: dict[str, Any]) -> Section:
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


def generalization_section(g: dict[str, Any]) -> Section:
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


def pgd_section(p: dict[str, Any]) -> Section:
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
        f"{num(config.get('restarts'))} restart(s), loss {config.get('loss', DASH)}; split {p.get('split', DASH)}, "
        f"{num(p.get('n'))} examples."
    )
    tables = [
        Table("", ["", "value"], rows),
        Table(
            "Share of the perturbation per block", ["block", "share"], _share_rows(p.get("block_share") or {})
        ),
    ]
    return Section("pgd", "Instance-wise PGD", summary, tables)


def uap_section(u: dict[str, Any]) -> Section:
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
    tables = [
        Table("", ["", "value"], rows),
        Table("Share of the UAP per block", ["block", "share"], _share_rows(u.get("block_share") or {})),
    ]
    return Section("uap", "Universal adversarial perturbation", summary, tables)


def ensemble_section(e: dict[str, Any]) -> Section:
    columns = ["", "test accuracy", "S-randomized AUC", "S^c-randomized AUC", "reliance"]

    def row(name: str, r: dict[str, Any]) -> list[str]:
        return [
            name,
            num(r.get("test_accuracy")),
            mean_std(r.get("s_randomized_auc")),
            mean_std(r.get("sc_randomized_auc")),
            str(r.get("verdict_code") or DASH),
        ]

    rows = [row(f"member {i}", m) for i, m in enumerate(e.get("members") or [])]
    rows.append(row("ensemble", e.get("ensemble") or {}))
    return Section("ensemble", "Ensemble", e.get("summary"), [Table("", columns, rows)])


BUILDERS: dict[str, Callable[[Any], Section]] = {
    "randomization": randomization_section,
    "feature_dependence": dependence_section,
    "generalization": generalization_section,
    "pgd": pgd_section,
    "uap": uap_section,
    "ensemble": ensemble_section,
}


def raw_json(value: Any) -> str:
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in BULKY_KEYS}
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "\n…"


def sections(results: dict[str, Any] | None) -> list[Section]:
    """One section per check, in the order the checks ran."""
    out = []
    for check, value in (results or {}).items():
        build = BUILDERS.get(check)
        try:
            if build is None:
                raise TypeError("no table for this check")
            out.append(build(value))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.warning("report: the %s results could not be tabulated: %s", check, exc)
            title = check.replace("_", " ").capitalize()
            out.append(Section(check, title, "The raw results of this check:", raw=raw_json(value)))
    return out
