"""Human-readable output of the client commands (rich): resources, lists, and an audit's key numbers.

Only the CLI imports this, inside handlers (rich is cheap, but ``sbaudit --help`` needs none of it).
Everything here reads the API's JSON as documented in the OpenAPI schema and tolerates missing parts: an
audit that failed has no results, an older server may lack a field.

It is over 400 lines because every view of the CLI sits here, one function per resource or check, so
the command line's look is changed in one place.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

# Rows of the feature-dependence tables: the groups whose randomization lowers the AUC most.
DEPENDENCE_ROWS = 5
PLAIN_WIDTH = 120


def console(*, stderr: bool = False) -> Console:
    """A console for stdout (results) or stderr (progress); wide and colourless when not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    # markup=False: names, stages and errors come from the server and are printed as they are.
    return Console(file=stream, width=None if stream.isatty() else PLAIN_WIDTH, highlight=False, markup=False)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int | float):
        return f"{value:.{digits}f}"
    return str(value)


def spread(stat: Any) -> str:
    """``{"mean": m, "std": s}`` -> ``m ± s``; a plain number as is."""
    if isinstance(stat, Mapping):
        return f"{number(stat.get('mean'))} ± {number(stat.get('std'))}"
    return number(stat)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _titled(title: str, table: Table) -> Group:
    """A heading line above a table (a rich table title would wrap to the table's width)."""
    return Group(Text(title, style="bold"), table)


def _fields(title: str, rows: Iterable[tuple[str, Any]]) -> Text:
    """``key  value`` lines under a title; rows whose value is None are left out."""
    shown = [
        (key, value if isinstance(value, str) else json.dumps(value))
        for key, value in rows
        if value is not None
    ]
    width = max((len(key) for key, _ in shown), default=0) + 2
    text = Text()
    text.append(title, style="bold")
    for key, value in shown:
        text.append("\n")
        text.append(key.ljust(width), style="bold")
        text.append(value)
    return text


def dataset_view(ds: Mapping[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [
        _fields(
            f"dataset {ds['id']}",
            [
                ("name", ds.get("name")),
                ("status", ds.get("status")),
                ("job", ds.get("job_id")),
                ("error", ds.get("error")),
                ("input shape", ds.get("input_shape")),
                ("classes", ds.get("num_classes")),
                ("sizes", ds.get("sizes")),
                ("S (simple blocks)", ds.get("simple_blocks")),
                ("rotated", ds.get("rotated")),
            ],
        )
    ]
    if ds.get("blocks"):
        blocks = Table()
        for column in ("#", "name", "kind", "coordinates", "Bayes accuracy"):
            blocks.add_column(column)
        for index, block in enumerate(ds["blocks"]):
            blocks.add_row(
                str(index), block["name"], block["kind"], str(len(block["indices"])),
                number(block.get("bayes_accuracy")),
            )  # fmt: skip
        parts.append(_titled("feature blocks", blocks))
    parts.extend(artifacts_view(ds.get("artifacts") or []))
    return Group(*parts)


def model_view(model: Mapping[str, Any]) -> RenderableType:
    result = model.get("result") or {}
    metrics = model.get("metrics") or {}
    parts: list[RenderableType] = [
        _fields(
            f"model {model['id']}",
            [
                ("name", model.get("name")),
                ("status", model.get("status")),
                ("job", model.get("job_id")),
                ("error", model.get("error")),
                ("dataset", model.get("dataset_id")),
                ("architecture", _cell("architecture", model.get("architecture"))),
                ("ensemble size", str(model.get("ensemble_size", 1))),
                ("updates", result.get("updates")),
                ("stopped because", result.get("stopped_because")),
                *((name, number(value)) for name, value in sorted(metrics.items())),
            ],
        )
    ]
    parts.extend(artifacts_view(model.get("artifacts") or []))
    return Group(*parts)


def job_view(job: Mapping[str, Any]) -> RenderableType:
    detail = job.get("detail") or {}
    return _fields(
        f"job {job['id']}",
        [
            ("kind", job.get("kind")),
            ("state", job.get("state")),
            ("progress", f"{100 * (job.get('progress') or 0):.0f}%"),
            ("stage", job.get("stage")),
            ("waiting for", ", ".join(job.get("waiting_for") or []) or None),
            ("step", step_text(detail) or None),
            ("metrics", metrics_text(detail.get("metrics")) or None),
            ("ETA", duration(job["eta_seconds"]) if job.get("eta_seconds") is not None else None),
            ("attempt", f"{job.get('attempt')} of {job.get('max_attempts')}"),
            ("error", job.get("error")),
            ("resource", f"{job.get('resource_type')} {job.get('resource_id')}"),
            ("created", job.get("created_at")),
            ("finished", job.get("finished_at")),
        ],
    )


def step_text(detail: Mapping[str, Any]) -> str:
    step, total = detail.get("step"), detail.get("total")
    if step is None:
        return ""
    return f"{step}/{total}" if total else str(step)


def metrics_text(metrics: Mapping[str, Any] | None, limit: int = 3) -> str:
    """The first few numeric metrics of a progress event, e.g. ``train_accuracy 0.953``."""
    shown = [
        f"{name} {number(value)}"
        for name, value in (metrics or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    return "  ".join(shown[:limit])


def artifacts_view(artifacts: list[Mapping[str, Any]]) -> list[RenderableType]:
    if not artifacts:
        return []
    table = Table()
    for column in ("id", "kind", "file", "bytes"):
        table.add_column(column, no_wrap=column == "id")
    for artifact in artifacts:
        table.add_row(artifact["id"], artifact["kind"], artifact["filename"], str(artifact["size"]))
    return [_titled("artifacts (sbaudit artifacts get ID)", table)]


LIST_COLUMNS: dict[str, tuple[str, ...]] = {
    "datasets": ("id", "name", "status", "input_shape", "created_at"),
    "models": ("id", "name", "status", "dataset_id", "architecture", "created_at"),
    "audits": ("id", "name", "status", "model_id", "verdict_code", "created_at"),
    "jobs": ("id", "kind", "state", "progress", "stage", "resource_id", "created_at"),
}


def list_view(kind: str, items: list[Mapping[str, Any]]) -> RenderableType:
    if not items:
        return Text(f"no {kind}")
    table = Table()
    columns = LIST_COLUMNS[kind]
    for column in columns:
        # Ids are never shortened: they are what the next command needs.
        table.add_column(
            column.replace("_", " "), no_wrap=column in ("id", "created_at") or column.endswith("_id")
        )
    for item in items:
        table.add_row(*(_cell(column, item.get(column)) for column in columns))
    return table


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "progress":
        return f"{100 * value:.0f}%"
    if column == "architecture" and isinstance(value, Mapping):
        options = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value.get('name')}({options})"
    if column == "created_at":
        return str(value)[:19].replace("T", " ")
    return value if isinstance(value, str) else json.dumps(value)


# --- audits -----------------------------------------------------------------------------------------


def audit_view(audit: Mapping[str, Any]) -> RenderableType:
    """The verdict in plain words, then a table of the key numbers of each check.

    The checks below with a view of their own show a terminal-sized digest (the lowest feature-dependence
    rows, no per-coordinate tables); any other check is shown from the report section the server stored
    for it (``section_view``), so a check added to the engine needs no change here.
    """
    models = ", ".join(audit.get("model_ids") or [audit.get("model_id", "?")])
    header = Text(f"audit {audit['id']} ({audit.get('status')}) of {models} on {audit.get('dataset_id')}")
    parts: list[RenderableType] = [header]
    if audit.get("error"):
        parts.append(Text(f"error: {audit['error']}", style="red"))
    if audit.get("verdict"):
        parts.append(Text.assemble(("Verdict: ", "bold"), audit["verdict"]))
    results = audit.get("results") or {}
    for check, view in CHECK_VIEWS.items():
        if isinstance(results.get(check), Mapping):
            parts.extend(view(results[check]))
    for stored in audit.get("sections") or []:
        name = stored.get("check") if isinstance(stored, Mapping) else None
        if name in results and name not in CHECK_VIEWS:
            parts.extend(section_view(stored))
    return Group(*parts)


def section_view(section: Mapping[str, Any]) -> list[RenderableType]:
    """A stored report section (title, summary, tables of formatted cells) as titled tables."""
    out: list[RenderableType] = [Text(str(section.get("title") or section.get("check")), style="bold")]
    if section.get("summary"):
        out.append(Text(str(section["summary"])))
    for stored in section.get("tables") or []:
        if not isinstance(stored, Mapping):
            continue
        table = Table()
        for column in stored.get("columns") or []:
            table.add_column(str(column))
        for row in stored.get("rows") or []:
            table.add_row(*(str(cell) for cell in row))
        out.append(_titled(str(stored["caption"]), table) if stored.get("caption") else table)
    return out


def _randomization(r: Mapping[str, Any]) -> list[RenderableType]:
    table = Table()
    for column in ("metric", "standard", "S-randomized", "S^c-randomized"):
        table.add_column(column)
    for label, key in (("AUC", "auc"), ("accuracy", "accuracy"), ("loss", "loss")):
        table.add_row(label, number(r.get(key)), spread(r.get(f"s_randomized_{key}")),
                      spread(r.get(f"sc_randomized_{key}")))  # fmt: skip
    table.add_row("logit shift", "-", spread(r.get("s_randomized_logit_shift")),
                  spread(r.get("sc_randomized_logit_shift")))  # fmt: skip
    return [_titled(f"Randomization ({r.get('repeats', '?')} repeats, split {r.get('split', '?')})", table)]


def _dependence(r: Mapping[str, Any]) -> list[RenderableType]:
    out: list[RenderableType] = []
    for method, groups in r.items():
        if not isinstance(groups, list) or not groups:
            continue
        lowest = sorted(groups, key=lambda g: g.get("auc") if g.get("auc") is not None else 1.0)
        table = Table()
        for column in ("group", "coordinates", "AUC", "accuracy"):
            table.add_column(column)
        for group in lowest[:DEPENDENCE_ROWS]:
            table.add_row(str(group.get("group")), str(group.get("coordinates")), number(group.get("auc")),
                          number(group.get("accuracy")))  # fmt: skip
        title = (f"Feature dependence ({method}): the {min(DEPENDENCE_ROWS, len(groups))} groups whose "
                 "randomization lowers the AUC most")  # fmt: skip
        out.append(_titled(title, table))
    return out


def _block_shares(title: str, r: Mapping[str, Any], rows: list[tuple[str, str]]) -> list[RenderableType]:
    table = Table()
    table.add_column("measure")
    table.add_column("value")
    for label, value in rows:
        table.add_row(label, value)
    for block, share in (r.get("block_share") or {}).items():
        table.add_row(f"share of the perturbation on {block}", spread(share))
    return [_titled(title, table)]


def _pgd(r: Mapping[str, Any]) -> list[RenderableType]:
    config = r.get("config") or {}
    title = (
        f"PGD ({config.get('norm', '?')}, eps {number(config.get('eps'))}, {config.get('steps', '?')} steps)"
    )
    return _block_shares(title, r, [("clean accuracy", number(r.get("clean_accuracy"))),
                                     ("adversarial accuracy", number(r.get("accuracy")))])  # fmt: skip


def _uap(r: Mapping[str, Any]) -> list[RenderableType]:
    title = (
        f"Universal perturbation ({r.get('method', '?')}, {r.get('norm', '?')}, eps {number(r.get('eps'))})"
    )
    return _block_shares(title, r, [("clean accuracy", number(r.get("clean_accuracy"))),
                                    ("accuracy under the UAP", number(r.get("accuracy"))),
                                    ("fooling rate", number(r.get("fooling_rate")))])  # fmt: skip


def _generalization(r: Mapping[str, Any]) -> list[RenderableType]:
    table = Table()
    for column in ("accuracy", "Bayes: S alone", "Bayes: S^c alone", "Bayes: all"):
        table.add_column(column)
    table.add_row(number(r.get("accuracy")), number(r.get("bayes_accuracy_s")),
                  number(r.get("bayes_accuracy_sc")), number(r.get("bayes_accuracy_all")))  # fmt: skip
    return [_titled("Generalization", table), *_summary(r)]


def _ensemble(r: Mapping[str, Any]) -> list[RenderableType]:
    table = Table()
    for column in ("", "test accuracy", "AUC", "S-randomized AUC", "S^c-randomized AUC", "verdict"):
        table.add_column(column)
    rows = [("ensemble", r.get("ensemble") or {})]
    rows += [(f"member {i}", m) for i, m in enumerate(r.get("members") or [])]
    for label, m in rows:
        table.add_row(label, number(m.get("test_accuracy")), number(m.get("auc")),
                      spread(m.get("s_randomized_auc")), spread(m.get("sc_randomized_auc")),
                      str(m.get("verdict_code", "-")))  # fmt: skip
    return [_titled(f"Ensemble of {r.get('size', '?')} ({r.get('combine', '?')})", table), *_summary(r)]


def _summary(r: Mapping[str, Any]) -> list[RenderableType]:
    return [Text(str(r["summary"]))] if r.get("summary") else []


CHECK_VIEWS = {
    "randomization": _randomization,
    "feature_dependence": _dependence,
    "pgd": _pgd,
    "uap": _uap,
    "generalization": _generalization,
    "ensemble": _ensemble,
}


# --- comparisons ------------------------------------------------------------------------------------


def value_text(value: Any) -> str:
    """A figure's value: integers as they are, other numbers to three decimals, yes / no, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return number(value)


def delta_text(value: int | float | None) -> str:
    """``+0.125`` / ``-0.004`` / ``+2`` / ``0``; a change too small for three decimals in scientific
    notation."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if isinstance(value, int):
        return f"{value:+d}"
    return f"{value:+.1e}" if abs(value) < 0.0005 else f"{value:+.3f}"


def comparison_view(comparison: Mapping[str, Any], *, changed_only: bool = False) -> RenderableType:
    """The verdicts of the compared audits, then a table per check: each figure's value per audit and its
    delta from the first (the baseline); changed figures in bold (with ``changed_only``, only those)."""
    audits = comparison.get("audits") or []
    verdicts = Table()
    for column in ("#", "audit", "name", "verdict", "code", "changed"):
        verdicts.add_column(column, no_wrap=column == "audit")
    for i, audit in enumerate(audits, 1):
        verdicts.add_row(
            f"{i}{' (baseline)' if i == 1 else ''}", audit["id"], audit.get("name") or "-",
            str(audit.get("verdict_label")), audit.get("verdict_code") or "-",
            "yes" if audit.get("verdict_changed") else "",
        )  # fmt: skip
    heading = "the verdict changed" if comparison.get("verdict_changed") else "the verdict did not change"
    parts: list[RenderableType] = [_titled(f"{len(audits)} audits compared: {heading}", verdicts)]
    for check in comparison.get("checks") or []:
        rows = [r for r in check.get("rows") or [] if r.get("changed") or not changed_only]
        if not rows:
            continue
        table = Table()
        for column in ("figure", "block", "statistic"):
            table.add_column(column)
        for i in range(1, len(audits) + 1):
            table.add_column(f"#{i}", justify="right")
            if i > 1:
                table.add_column(f"Δ #{i}", justify="right")
        for row in rows:
            cells = [row["metric"], row.get("block") or "", row["statistic"]]
            for i, value in enumerate(row["values"]):
                cells.append(value_text(value))
                if i:
                    cells.append(delta_text(row["deltas"][i]))
            table.add_row(*cells, style="bold" if row.get("changed") else None)
        changed = sum(1 for r in check.get("rows") or [] if r.get("changed"))
        figures = len(check.get("rows") or [])
        title = f"{check['title']} ({check['check']}): {changed} of {figures} figures changed"
        parts.append(_titled(title, table))
    if changed_only and len(parts) == 1:
        parts.append(Text("No figure differs from the baseline."))
    return Group(*parts)
