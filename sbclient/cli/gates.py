"""Gates: conditions on a finished audit that make ``sbaudit audits run --wait`` and ``sbaudit audits show``
exit with status 3 (``GATE_TRIPPED``), so a CI pipeline can fail on what an audit found, not only on whether
its job ran.

- ``--fail-on exclusively_s,mostly_s``: trips when the audit's ``verdict_code`` is one of these.
- ``--fail-if "FIELD OP NUMBER"`` (repeatable): trips when the comparison holds. FIELD is a name from
  ``ALIASES`` (the randomization check's figures, e.g. ``s_randomized_auc``) or a dotted path into the
  audit's ``results`` whose first part is a check (``pgd.simple_share``, ``randomization.auc``,
  ``feature_dependence.random.0.accuracy``); a measurement repeated over permutations (``{"mean", "std",
  ...}``) compares its mean. OP is one of ``< <= > >= == !=``.

Everything is parsed before a request is sent: a malformed condition, an unknown field or verdict code is a
one-line error (exit status 2), as is a field this audit's results do not hold (its check did not run).
The outcome of every gate is printed on stderr, so ``--json`` output on stdout stays as it is.
"""

from __future__ import annotations

import argparse
import math
import operator
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sbclient.cli.errors import CliError

GATE_TRIPPED = 3
# The API's verdict_code values (service.schemas.audits.VerdictCode).
VERDICT_CODES = ("exclusively_s", "mostly_s", "both", "mostly_sc", "exclusively_sc", "not_predictive")
# The API's check names (service.schemas.audits.CheckName): the first part of a dotted field.
CHECK_NAMES = ("randomization", "feature_dependence", "generalization", "pgd", "uap", "ensemble")
# Short names for the randomization check's figures (docs/cli.md "Gates in CI").
ALIASES: dict[str, str] = {
    name: f"randomization.{name}"
    for name in (
        "auc", "accuracy", "loss",
        *(f"{part}_randomized_{metric}" for part in ("s", "sc")
          for metric in ("auc", "accuracy", "loss", "logit_shift")),
    )
}  # fmt: skip
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_CONDITION = re.compile(r"\s*(?P<field>[A-Za-z_][\w.]*)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<number>\S+)\s*")


@dataclass(frozen=True)
class Condition:
    """One ``--fail-if``: ``text`` as given, ``path`` the keys into the audit's results."""

    text: str
    field: str
    path: tuple[str, ...]
    op: str
    number: float

    @property
    def check(self) -> str:
        return self.path[0]


def parse_condition(text: str) -> Condition:
    """``"s_randomized_auc < 0.6"`` -> a Condition; anything else is a CliError naming what is wrong."""
    where = f"--fail-if {text!r}"
    match = _CONDITION.fullmatch(text)
    if match is None:
        raise CliError(f"{where}: expected FIELD OP NUMBER, OP one of {' '.join(OPERATORS)} "
                       "(e.g. 's_randomized_auc < 0.6')")  # fmt: skip
    field, op, number_text = match["field"], match["op"], match["number"]
    try:
        number = float(number_text)
    except ValueError:
        raise CliError(f"{where}: {number_text!r} is not a number") from None
    if not math.isfinite(number):
        raise CliError(f"{where}: the number must be finite, not {number_text!r}")
    return Condition(text=text, field=field, path=_field_path(field, where), op=op, number=number)


def _field_path(field: str, where: str) -> tuple[str, ...]:
    if field in ALIASES:
        return tuple(ALIASES[field].split("."))
    parts = tuple(field.split("."))
    if len(parts) < 2 or parts[0] not in CHECK_NAMES or not all(parts):
        raise CliError(
            f"{where}: unknown field {field!r}: use one of {', '.join(ALIASES)}, or a dotted path "
            f"into the results starting with a check ({', '.join(CHECK_NAMES)}), e.g. pgd.simple_share"
        )
    return parts


def parse_fail_on(values: Iterable[str]) -> frozenset[str]:
    """``["exclusively_s,mostly_s"]`` -> the verdict codes; an unknown one is a CliError."""
    values = list(values)
    codes = {part.strip() for value in values for part in value.split(",") if part.strip()}
    if values and not codes:
        raise CliError(f"--fail-on: name at least one verdict code ({', '.join(VERDICT_CODES)})")
    unknown = sorted(codes - set(VERDICT_CODES))
    if unknown:
        raise CliError(
            f"--fail-on: unknown verdict code {unknown[0]!r} (choose from: {', '.join(VERDICT_CODES)})"
        )
    return frozenset(codes)


@dataclass(frozen=True)
class Gates:
    fail_on: frozenset[str]
    conditions: tuple[Condition, ...]

    def __bool__(self) -> bool:
        return bool(self.fail_on or self.conditions)

    def require_checks(self, checks: Iterable[str]) -> None:
        """Refuse, before the audit runs, a condition on a check the request does not ask for."""
        requested = set(checks)
        for condition in self.conditions:
            if condition.check not in requested:
                raise CliError(f"--fail-if {condition.text!r}: reads the {condition.check} check's results, "
                               f"which this audit does not run (add it to --checks)")  # fmt: skip

    def judge(self, audit: Mapping[str, Any]) -> int:
        """Evaluate every gate on a ready audit, print each outcome on stderr; GATE_TRIPPED if any tripped."""
        outcomes: list[tuple[bool, str]] = []
        if self.fail_on:
            code = audit.get("verdict_code")
            listed = ",".join(sorted(self.fail_on, key=VERDICT_CODES.index))
            outcomes.append((code in self.fail_on, f"--fail-on {listed} (verdict_code {code})"))
        for condition in self.conditions:
            value = _value(audit.get("results"), condition)
            tripped = OPERATORS[condition.op](value, condition.number)
            outcomes.append((tripped, f"--fail-if {condition.text!r} ({condition.field} = {value:.6g})"))
        for tripped, text in outcomes:
            print(f"gate {'tripped' if tripped else 'passed'}: {text}", file=sys.stderr)
        return GATE_TRIPPED if any(tripped for tripped, _ in outcomes) else 0


def _value(results: Any, condition: Condition) -> float:
    """The number at ``condition.path`` in ``results`` (a measurement's mean); a CliError saying what is
    missing otherwise."""
    where = f"--fail-if {condition.text!r}"
    node = results.get(condition.check) if isinstance(results, Mapping) else None
    if node is None:
        raise CliError(f"{where}: this audit has no {condition.check} results (the check did not run)")
    walked = condition.check
    for key in condition.path[1:]:
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise CliError(f"{where}: results.{walked} has no {key!r}")
        walked = f"{walked}.{key}"
    if isinstance(node, Mapping) and "mean" in node:
        node = node["mean"]
    if node is None:
        raise CliError(f"{where}: results.{walked} has no value in this audit (null)")
    if not isinstance(node, int | float):
        raise CliError(f"{where}: results.{walked} is not a number")
    return float(node)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Exit status: 0 done and no gate tripped, 1 the job failed or was canceled, 2 a usage error or a "
        "refusal, 3 a gate tripped (docs/cli.md, 'Gates in CI')."
    )
    parser.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="CODES",
        help="exit with status 3 if the verdict_code is one of these (comma-separated: "
        f"{', '.join(VERDICT_CODES)})",
    )
    parser.add_argument(
        "--fail-if",
        action="append",
        default=[],
        metavar="EXPR",
        help="exit with status 3 if 'FIELD OP NUMBER' holds, e.g. 's_randomized_auc < 0.6' or "
        "'pgd.simple_share > 0.5' (repeatable)",
    )


def from_args(args: argparse.Namespace) -> Gates:
    return Gates(
        fail_on=parse_fail_on(args.fail_on),
        conditions=tuple(parse_condition(text) for text in args.fail_if),
    )
