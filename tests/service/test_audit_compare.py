"""GET /v1/audits/compare (JSON) and /v1/audits/compare/report (HTML), through HTTP, on audits stored as
the worker stores them (a real engine result, and the same audit moved to another verdict)."""

from __future__ import annotations

import copy
import re

import pytest
from markupsafe import escape
from service_testing import problem
from stored_audits import CHANGED_CODE, CHANGED_S_AUC, CHECKS, changed_audit, engine_audit, store_audit

from service.auth import create_key
from service.reports.result_rows import result_rows
from service.schemas.comparisons import MAX_COMPARED_AUDITS, AuditComparison

EVIL = '<script>alert("owned")</script>'


@pytest.fixture
def store(app, db):
    def make(audit=None, **kwargs) -> str:
        return store_audit(app, db, audit, **kwargs)

    return make


def compare(client, auth, *ids: str, path: str = "/v1/audits/compare"):
    return client.get(path, params={"ids": ",".join(ids)}, headers=auth)


def row(
    comparison: dict, check: str, metric: str, statistic: str = "value", block: str | None = None
) -> dict:
    rows = next(c["rows"] for c in comparison["checks"] if c["check"] == check)
    return next(r for r in rows if (r["metric"], r["statistic"], r["block"]) == (metric, statistic, block))


def test_figures_side_by_side_with_deltas_and_the_verdict_change(client, auth, store):
    base, changed = store(name="before"), store(changed_audit(), name="after")
    response = compare(client, auth, base, changed)
    assert response.status_code == 200, response.text
    body = response.json()
    AuditComparison.model_validate(body)

    assert [a["id"] for a in body["audits"]] == [base, changed]
    first, second = body["audits"]
    assert (first["verdict_label"], second["verdict_label"]) == ("simplicity_biased", "not_simplicity_biased")
    assert (first["verdict_code"], second["verdict_code"]) == (engine_audit()["verdict_code"], CHANGED_CODE)
    assert [a["verdict_changed"] for a in body["audits"]] == [False, True] and body["verdict_changed"]
    assert (first["name"], second["report_url"]) == ("before", f"/v1/audits/{changed}/report")
    assert body["report_url"] == f"/v1/audits/compare/report?ids={base},{changed}"

    # Every check, in the order it ran, titled as in the reports; its rows are the CSV's rows.
    assert [c["check"] for c in body["checks"]] == CHECKS
    assert body["checks"][0]["title"] == "S / S^c randomization"
    results = engine_audit()["results"]
    for check in body["checks"]:
        expected = [
            (r.metric, r.block, r.statistic) for r in result_rows(results) if r.check == check["check"]
        ]
        assert [(r["metric"], r["block"], r["statistic"]) for r in check["rows"]] == expected

    s_auc = results["randomization"]["s_randomized_auc"]["mean"]
    moved = row(body, "randomization", "s_randomized_auc", "mean")
    assert moved["values"] == [s_auc, CHANGED_S_AUC] and moved["changed"] is True
    assert moved["deltas"][0] == 0 and moved["deltas"][1] == pytest.approx(CHANGED_S_AUC - s_auc)
    same = row(body, "randomization", "auc")
    assert same["values"] == [results["randomization"]["auc"]] * 2 and same["deltas"] == [0, 0]
    assert same["changed"] is False
    assert sum(r["changed"] for c in body["checks"] for r in c["rows"]) == 1

    # Per-block figures are named by their block.
    linear = row(body, "feature_dependence", "random.auc", block="block 0: linear")
    assert linear["values"][0] == results["feature_dependence"]["random"][0]["auc"]
    share = row(body, "pgd", "block_share", "std", block="linear")
    assert share["values"][0] == results["pgd"]["block_share"]["linear"]["std"]
    assert row(body, "generalization", "suboptimal")["deltas"] == [None, None]  # yes / no: no delta


def test_three_audits_and_a_check_only_some_ran(client, auth, store):
    without_uap = copy.deepcopy(changed_audit())
    del without_uap["results"]["uap"]
    n = without_uap["results"]["randomization"]["n"]
    without_uap["results"]["randomization"]["n"] = n - 50
    ids = [store(), store(without_uap), store()]
    body = compare(client, auth, *ids).json()
    examples = row(body, "randomization", "n")
    assert examples["values"] == [n, n - 50, n] and examples["deltas"] == [0, -50, 0]
    assert all(type(d) is int for d in examples["deltas"])  # counts stay integers
    assert [a["verdict_changed"] for a in body["audits"]] == [False, True, False]
    accuracy = row(body, "uap", "accuracy")
    value = engine_audit()["results"]["uap"]["accuracy"]
    assert accuracy["values"] == [value, None, value] and accuracy["deltas"] == [0, None, 0]
    assert accuracy["changed"] is True
    s_auc = row(body, "randomization", "s_randomized_auc", "mean")
    assert len(s_auc["values"]) == len(s_auc["deltas"]) == 3 and s_auc["deltas"][2] == 0


def test_the_same_results_compare_unchanged(client, auth, store):
    body = compare(client, auth, store(), store()).json()
    assert body["verdict_changed"] is False
    assert not any(r["changed"] for c in body["checks"] for r in c["rows"])


def test_a_check_only_the_later_audit_ran_comes_after(client, auth, store):
    without_uap = copy.deepcopy(engine_audit())
    del without_uap["results"]["uap"]
    body = compare(client, auth, store(without_uap), store()).json()
    assert [c["check"] for c in body["checks"]] == CHECKS
    assert row(body, "uap", "accuracy")["values"][0] is None


def test_ownership_missing_and_unfinished_audits(client, auth, other_auth, store):
    mine, theirs = store(), store(owner="bob")
    body = problem(compare(client, auth, mine, theirs), 404)
    assert theirs in body["detail"]
    problem(compare(client, other_auth, mine, theirs), 404)
    unknown = "aud_AAAAAAAAAAAAAAAA"
    assert unknown in problem(compare(client, auth, mine, unknown), 404)["detail"]
    assert "not-an-id" in problem(compare(client, auth, "not-an-id", mine), 404)["detail"]
    running = store(status="running")
    body = problem(compare(client, auth, mine, running), 409)
    assert running in body["detail"] and "running" in body["detail"] and body["field"] == "query.ids"
    problem(client.get("/v1/audits/compare", params={"ids": f"{mine},{mine}x"}), 401)


@pytest.mark.parametrize(
    ("ids", "message"),
    [("{a}", "name 2 to"), ("{a},{a}", "named twice"), ("{a},,{b}", "empty entry"), ("{a},", "empty entry"),
     (",".join(["{a}"] * (MAX_COMPARED_AUDITS + 1)), "name 2 to")],
)  # fmt: skip
def test_too_few_too_many_repeated_or_empty_ids_are_422(client, auth, store, ids, message):
    a, b = store(), store()
    response = client.get("/v1/audits/compare", params={"ids": ids.format(a=a, b=b)}, headers=auth)
    body = problem(response, 422)
    assert body["errors"][0]["field"] == "query.ids" and message in body["detail"]


def test_compare_is_not_read_as_an_audit_id(client, auth):
    body = problem(client.get("/v1/audits/compare", headers=auth), 422)
    assert body["errors"][0]["field"] == "query.ids"
    problem(client.get("/v1/audits/compare/report", headers=auth), 422)


def test_the_html_view(client, auth, store):
    base, changed = store(name=EVIL), store(changed_audit())
    response = compare(client, auth, base, changed, path="/v1/audits/compare/report")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert "The verdict changed" in page and "Simplicity-biased" in page and "Not simplicity-biased" in page
    assert f'href="/v1/audits/{base}/report"' in page and f'href="/v1/audits/{changed}/report"' in page
    assert EVIL not in page and str(escape(EVIL)) in page
    assert '<h3 id="check-randomization">S / S^c randomization</h3>' in page
    # The changed figure is highlighted, with both values and its delta.
    s_auc = engine_audit()["results"]["randomization"]["s_randomized_auc"]["mean"]
    changed_row = re.search(r'<tr class="changed"><td><code>s_randomized_auc</code></td>.*?</tr>', page)
    assert changed_row is not None
    cells = re.findall(r'<td class="num">([^<]*)</td>', changed_row.group(0))
    assert cells == [f"{s_auc:.3f}", f"{CHANGED_S_AUC:.3f}", f"{CHANGED_S_AUC - s_auc:+.3f}"]
    assert page.count('<tr class="changed"><td>') == 1
    # Long tables (feature dependence per coordinate) are folded; nothing loads from elsewhere.
    assert "<details><summary>" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_the_html_view_takes_the_web_ui_cookie_and_sends_browsers_to_log_in(client, db, store):
    ids = f"{store()},{store()}"
    path = "/v1/audits/compare/report"
    browser = client.get(path, params={"ids": ids}, headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303 and browser.headers["location"].startswith("/ui/login?next=")
    assert "compare/report" in browser.headers["location"]
    problem(client.get(path, params={"ids": ids}), 401)
    key, _ = create_key(db, owner="alice")
    client.cookies.set("sbaudit_key", key)
    assert "The verdict did not change" in client.get(path, params={"ids": ids}).text


def test_the_routes_are_documented(app):
    paths = app.openapi()["paths"]
    compare_op = paths["/v1/audits/compare"]["get"]
    assert compare_op["operationId"] == "compareAudits"
    assert compare_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AuditComparison"
    )
    html_op = paths["/v1/audits/compare/report"]["get"]
    assert list(html_op["responses"]["200"]["content"]) == ["text/html"]
    for op in (compare_op, html_op):
        assert "409" in op["responses"] and op["parameters"][0]["name"] == "ids"
