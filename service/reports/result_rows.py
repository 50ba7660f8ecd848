"""An audit's results as flat, named rows: one per check × metric × block × statistic.

The results JSON of a check is nested (a ``{"mean", "std", "values"}`` summary per repeated measurement, a
list of per-block groups, a ``block_share`` object keyed by block name, plotted arrays). Comparisons
(service/reports/comparison.py) and the CSV export need the same numbers as rows with stable names, read at
full precision (the report's tables hold rounded, formatted cells). The rows are read from the results the
same way for every check, so a new check needs no change here; only these conventions of the engine's
results JSON are known:

- a number, a boolean or null is one row, statistic ``value`` (null: the engine had NaN or no value);
- an object with a ``mean`` is one repeated measurement: rows ``mean`` and ``std`` (the per-repeat
  ``values`` are left out);
- a list of objects that each have a text ``group`` (feature dependence: per block, per coordinate) gives
  each object's rows with ``block`` = its group;
- the entries of a ``block_share`` object are blocks: ``block`` = the entry's name;
- any other list of objects is numbered into the metric's name (``members.0.test_accuracy``);
- lists of numbers (histograms, vectors, heatmaps, index lists) and text are left out: they are plotted or
  describe the run, they are not figures to put side by side.

A metric's name is its path in the check's results, joined with dots (``s_randomized_auc``,
``config.eps``, ``random.accuracy``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Statistic = Literal["value", "mean", "std"]
Value = bool | int | float | None
RowKey = tuple[str, str, str | None, Statistic]
BLOCK_KEYED = "block_share"
CSV_COLUMNS = ("audit_id", "check", "metric", "block", "statistic", "value")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ResultRow:
    check: str
    metric: str
    block: str | None  # None: the value is about the whole model, not one block or group
    statistic: Statistic
    value: Value

    @property
    def key(self) -> RowKey:
        """What names the row: the same key in two audits means the same figure."""
        return (self.check, self.metric, self.block, self.statistic)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float)


def _is_summary(value: Any) -> bool:
    return isinstance(value, dict) and "mean" in value and _is_scalar(value["mean"])


def _is_groups(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and isinstance(v.get("group"), str) for v in value)
    )


def _walk(value: Any, path: str, block: str | None) -> Iterator[tuple[str, str | None, Statistic, Value]]:
    if _is_scalar(value):
        yield path, block, "value", value
    elif _is_summary(value):
        yield path, block, "mean", value["mean"]
        if _is_scalar(value.get("std")):
            yield path, block, "std", value.get("std")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if key == BLOCK_KEYED and isinstance(item, dict):
                for block_name, share in item.items():
                    yield from _walk(share, name, str(block_name))
            else:
                yield from _walk(item, name, block)
    elif _is_groups(value):
        for group in value:
            yield from _walk({k: v for k, v in group.items() if k != "group"}, path, group["group"])
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}.{i}", block)


def result_rows(results: dict[str, Any] | None) -> list[ResultRow]:
    """Every row of every check, in the order the checks ran and their results list them."""
    rows: list[ResultRow] = []
    for check, value in (results or {}).items():
        if isinstance(value, dict):
            rows.extend(ResultRow(check, *row) for row in _walk(value, "", None))
    return rows


def _csv_text(text: str) -> str:
    """Text a spreadsheet would run as a formula (a block an uploader named ``=HYPERLINK(...)``) is
    prefixed with ``'``, the usual guard against CSV injection; other text is left as it is."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _csv_value(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)  # the shortest text that reads back as the same number


def to_csv(audit_id: str, rows: list[ResultRow]) -> str:
    """The rows as CSV (RFC 4180, CRLF line ends, a header line ``CSV_COLUMNS``). Values are numbers, so
    only the names need the formula guard."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        names = [_csv_text(text) for text in (row.check, row.metric, row.block or "")]
        writer.writerow([audit_id, *names, row.statistic, _csv_value(row.value)])
    return out.getvalue()
