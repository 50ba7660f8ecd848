"""What one audit check is (``Check``), what it runs on (``CheckContext``), and how its report section is
written.

A check is a value, not a subclass: a name, the defaults of its options, and three functions (``run``,
``figures``, ``report_section``). ``sbengine.audit`` finds checks by name in ``sbengine.checks.CHECKS``, so a
new check is one module there and never an edit to the audit loop.

The report section is the part of a check the service needs and cannot compute, since it never imports the
engine: the worker stores each check's section next to its results and the service renders whatever
sections it finds. A section is plain JSON::

    {"check": "pgd", "title": "Instance-wise PGD", "summary": "one line saying what the numbers are",
     "tables": [{"caption": "", "columns": ["", "value"], "rows": [["clean accuracy", "0.998"]],
                 "collapsed": false}],
     "figures": [{"name": "pgd_heatmap", "title": "...", "caption": "how to read the plot"}]}

Cells are strings formatted here (three decimals, ``mean ± std`` for a repeated measurement, a dash for a
missing value) so every reader shows the same numbers. ``figures`` lists the PNGs ``Check.figures`` draws
for this result, in reading order, with a title and a caption saying how to read each; a table whose
``collapsed`` is true (long per-coordinate listings) starts folded.

``report_section`` and ``figures`` read only the JSON-able result (never the model), so both can be
recomputed from a stored result.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from sbengine.data.dataset import Dataset
from sbengine.metrics import DEFAULT_THRESHOLDS, VerdictThresholds
from sbengine.progress import ProgressCallback

DASH = "—"


@dataclass
class CheckContext:
    """Everything a check's ``run`` may use. ``options`` are this check's, defaults filled in;
    ``verdict_thresholds`` are the audit's, for a check that gives verdicts of its own (the ensemble's
    members); ``progress`` reports within this check only (the audit scales it into its share of the
    whole)."""

    model: torch.nn.Module
    dataset: Dataset
    simple_blocks: list[int]
    split: str
    repeats: int
    seed: int
    device: str
    options: dict[str, Any] = field(default_factory=dict)
    members: list[torch.nn.Module] | None = None
    verdict_thresholds: VerdictThresholds = DEFAULT_THRESHOLDS
    progress: ProgressCallback | None = None


def no_figures(result: dict[str, Any], dataset: Dataset) -> dict[str, bytes]:
    return {}


@dataclass(frozen=True)
class Check:
    """One audit check.

    - ``name``: the name requests use (``checks=[...]``) and the key of its result.
    - ``run(context) -> dict``: the JSON-able result (numpy / torch scalars and NaN allowed; the worker
      turns them into strict JSON).
    - ``report_section(result) -> dict``: the section described in this module's docstring.
    - ``figures(result, dataset) -> {name: png}``: the plots; names are artifact kinds, prefixed with the
      check's name (or its subject) so two checks never draw the same name.
    - ``options``: every option with its default; a request may only override these keys.
    - ``needs_gradients``: the check backpropagates through the model (an attack), so it cannot run on a
      model that only offers forward passes.
    - ``needs_members``: the check compares an ensemble with its members and fails without them.
    - ``needs_fixed_blocks``: the check works on S as a fixed set of coordinates (an attack confined to, or
      measured on, S's columns), so S cannot be a per-example region (a mask block).
    """

    name: str
    run: Callable[[CheckContext], dict[str, Any]]
    report_section: Callable[[dict[str, Any]], dict[str, Any]]
    figures: Callable[[dict[str, Any], Dataset], dict[str, bytes]] = no_figures
    options: Mapping[str, Any] = field(default_factory=dict)
    needs_gradients: bool = False
    needs_members: bool = False
    needs_fixed_blocks: bool = False

    def defaults(self) -> dict[str, Any]:
        """A fresh copy of the defaults (an option may be a list, which a merge must not share)."""
        return copy.deepcopy(dict(self.options))


# --- writing a section ------------------------------------------------------------------------------


def section(
    check: str,
    title: str,
    summary: str | None = None,
    *,
    tables: list[dict[str, Any]] | None = None,
    figures: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "check": check,
        "title": title,
        "summary": summary,
        "tables": tables or [],
        "figures": figures or [],
    }


def table(
    caption: str, columns: list[str], rows: list[list[str]], *, collapsed: bool = False
) -> dict[str, Any]:
    return {"caption": caption, "columns": columns, "rows": rows, "collapsed": collapsed}


def figure(name: str, title: str, caption: str) -> dict[str, str]:
    return {"name": name, "title": title, "caption": caption}


def num(value: Any, digits: int = 3) -> str:
    """``0.503``; integers as they are; booleans as yes / no; missing values, NaN and non-numbers as a dash
    (a stored result holds null where the engine had NaN, so both read the same)."""
    if isinstance(value, bool) or value is None:
        return DASH if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else DASH
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


def share_rows(shares: dict[str, Any]) -> list[list[str]]:
    """``[block, share]`` rows of a ``block_share`` result (a number, or mean ± std over examples)."""
    return [[str(name), mean_std(value)] for name, value in shares.items()]
