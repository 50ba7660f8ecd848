"""Two or more finished audits side by side: every figure of every check, its deltas, and the verdicts.

The figures are the rows of result_rows.py (full precision, named the same way as the CSV export), matched
across audits by (check, metric, block, statistic). The first audit is the baseline: each delta is an
audit's value minus the first one's. Rows keep the first audit's order; a row only a later audit has (a
check the first did not run, a block it lacks) follows, with null values where an audit has none.
"""

from __future__ import annotations

from urllib.parse import quote

from sqlalchemy.orm import Session

from service.models import Audit
from service.reports.content import check_parts, verdict_label
from service.reports.result_rows import ResultRow, RowKey, Statistic, Value, result_rows
from service.routes.common import get_owned, require_ready
from service.schemas.comparisons import AuditComparison, CheckComparison, ComparedAudit, ComparisonRow

IDS_FIELD = "query.ids"


def owned_finished_audits(session: Session, owner: str, ids: list[str]) -> list[Audit]:
    """The audits in the order given: 404 naming one that does not exist for ``owner``, 409 naming one
    that has not finished (it has no results to compare yet)."""
    audits = [get_owned(session, Audit, "audit", owner=owner, resource_id=audit_id) for audit_id in ids]
    for audit in audits:
        require_ready(audit, "audit", IDS_FIELD)
    return audits


def comparison_path(ids: list[str], suffix: str = "") -> str:
    return f"/v1/audits/compare{suffix}?ids={quote(','.join(ids), safe=',')}"


def _number(value: Value) -> float | int | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _same(a: Value, b: Value) -> bool:
    """Equal values of the same kind (``True`` is not ``1`` here)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _row(metric: str, block: str | None, statistic: Statistic, values: list[Value]) -> ComparisonRow:
    base = _number(values[0])
    deltas = [
        None if base is None or (number := _number(value)) is None else number - base for value in values
    ]
    changed = any(not _same(value, values[0]) for value in values[1:])
    return ComparisonRow(
        metric=metric, block=block, statistic=statistic, values=values, deltas=deltas, changed=changed
    )


def _titles(audits: list[Audit]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for audit in audits:
        for section in check_parts(audit)[0]:
            titles.setdefault(section.check, section.title)
    return titles


def compare(audits: list[Audit]) -> AuditComparison:
    """The comparison of finished audits (``owned_finished_audits``), the first being the baseline."""
    per_audit: list[dict[RowKey, ResultRow]] = [
        {row.key: row for row in result_rows(audit.results)} for audit in audits
    ]
    keys: dict[RowKey, None] = {}
    for rows in per_audit:
        keys.update(dict.fromkeys(rows))
    titles = _titles(audits)
    checks: dict[str, CheckComparison] = {}
    for key in keys:
        check, metric, block, statistic = key
        values = [rows[key].value if key in rows else None for rows in per_audit]
        if check not in checks:
            title = titles.get(check) or check.replace("_", " ").capitalize()
            checks[check] = CheckComparison(check=check, title=title, rows=[])
        checks[check].rows.append(_row(metric, block, statistic, values))
    first = audits[0].verdict_code
    compared = [
        ComparedAudit(
            id=audit.id,
            name=audit.name,
            model_id=audit.model_id,
            dataset_id=audit.dataset_id,
            created_at=audit.created_at,
            checks=list((audit.params or {}).get("checks") or []),
            verdict=audit.verdict,
            verdict_code=audit.verdict_code,
            verdict_label=verdict_label(audit),
            verdict_changed=audit.verdict_code != first,
            report_url=f"/v1/audits/{audit.id}/report",
        )
        for audit in audits
    ]
    return AuditComparison(
        audits=compared,
        verdict_changed=any(a.verdict_changed for a in compared),
        checks=list(checks.values()),
        report_url=comparison_path([a.id for a in audits], "/report"),
    )
