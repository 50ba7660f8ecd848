"""The exports, through HTTP: GET /v1/audits/{id}/results.csv and the report as one HTML file to download
(GET /v1/audits/{id}/report?download=true), on an audit stored as the worker stores it."""

from __future__ import annotations

import base64
import csv
import io
import re

import pytest
from service_testing import problem
from stored_audits import CHECKS, engine_audit, engine_figures, store_audit

from service.reports.result_rows import CSV_COLUMNS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture
def audit_id(app, db) -> str:
    return store_audit(app, db, figures=True)


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_results_csv_has_one_row_per_check_figure_block_and_statistic(client, auth, audit_id):
    response = client.get(f"/v1/audits/{audit_id}/results.csv", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == f'attachment; filename="{audit_id}-results.csv"'
    assert response.text.splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = csv_rows(response.text)
    assert {r["audit_id"] for r in rows} == {audit_id}
    assert list(dict.fromkeys(r["check"] for r in rows)) == CHECKS
    keys = [(r["check"], r["metric"], r["block"], r["statistic"]) for r in rows]
    assert len(set(keys)) == len(keys)  # every row names one figure

    def value(check: str, metric: str, statistic: str = "value", block: str = "") -> str:
        return next(r["value"] for r in rows if (r["check"], r["metric"], r["statistic"], r["block"]) ==
                    (check, metric, statistic, block))  # fmt: skip

    # Full precision: each number reads back as the stored one.
    results = engine_audit()["results"]
    randomization = results["randomization"]
    assert float(value("randomization", "auc")) == randomization["auc"]
    s_auc = randomization["s_randomized_auc"]
    assert float(value("randomization", "s_randomized_auc", "mean")) == s_auc["mean"]
    assert float(value("randomization", "s_randomized_auc", "std")) == s_auc["std"]
    assert value("randomization", "repeats") == "2"
    assert value("generalization", "suboptimal") in ("true", "false")
    # One row per block (or coordinate group) and figure.
    groups = results["feature_dependence"]["random"]
    accuracy = [r for r in rows if r["metric"] == "random.accuracy"]
    assert [r["block"] for r in accuracy] == [g["group"] for g in groups]
    assert [float(r["value"]) for r in accuracy] == [g["accuracy"] for g in groups]
    for block, share in results["pgd"]["block_share"].items():
        assert float(value("pgd", "block_share", "mean", block)) == share["mean"]
    assert float(value("uap", "uap_norm.l2")) == results["uap"]["uap_norm"]["l2"]
    # Plotted arrays (histograms, heatmaps, vectors) and text are not rows.
    assert not {"histograms", "heatmap", "uap", "split", "summary"} & {
        r["metric"].split(".")[0] for r in rows
    }
    for r in rows:
        assert r["value"] in ("", "true", "false") or float(r["value"]) == float(r["value"])


def test_a_block_name_a_spreadsheet_would_run_is_quoted(client, auth, app, db):
    """Uploaded datasets name their own blocks: a name starting like a formula is neutralized."""
    audit = engine_audit()
    audit["results"]["uap"]["block_share"] = {"=HYPERLINK(1)": 0.5, "-x": -0.25, "slab": 0.25}
    audit_id = store_audit(app, db, audit)
    rows = csv_rows(client.get(f"/v1/audits/{audit_id}/results.csv", headers=auth).text)
    shares = {r["block"]: r["value"] for r in rows if (r["check"], r["metric"]) == ("uap", "block_share")}
    assert shares == {"'=HYPERLINK(1)": "0.5", "'-x": "-0.25", "slab": "0.25"}  # numbers are left alone


def test_results_csv_of_a_missing_foreign_or_unfinished_audit(client, auth, other_auth, app, db, audit_id):
    problem(client.get(f"/v1/audits/{audit_id}/results.csv", headers=other_auth), 404)
    problem(client.get("/v1/audits/aud_AAAAAAAAAAAAAAAA/results.csv", headers=auth), 404)
    problem(client.get(f"/v1/audits/{audit_id}/results.csv"), 401)
    queued = store_audit(app, db, status="queued")
    body = problem(client.get(f"/v1/audits/{queued}/results.csv", headers=auth), 409)
    assert queued in body["detail"] and "queued" in body["detail"]


def test_the_report_downloads_as_one_self_contained_file(client, auth, audit_id):
    response = client.get(f"/v1/audits/{audit_id}/report", params={"download": "true"}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-disposition"] == f'attachment; filename="{audit_id}-report.html"'
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text

    # Every figure is inline; nothing is loaded from anywhere, and no link leads back to the server.
    images = DATA_URI.findall(page)
    assert len(images) == len(engine_figures()) > 0
    assert all(base64.b64decode(encoded).startswith(PNG_SIGNATURE) for encoded in images)
    assert re.findall(r"""\bsrc=["']?([^"' >]+)""", page) == [f"data:image/png;base64,{e}" for e in images]
    assert "<link" not in page and "<script" not in page and "url(" not in page and "@import" not in page
    assert "href=" not in page
    outside_commands = re.sub(
        r"<pre>.*?</pre>", "", page, flags=re.S
    )  # the reproduce commands name the server
    assert "http://" not in outside_commands and "https://" not in outside_commands
    assert f"/v1/audits/{audit_id}/results.csv" in page  # named, for whoever reads the file later

    # The same report as the page: the checks and figures sections are identical.
    live = client.get(f"/v1/audits/{audit_id}/report", headers=auth)
    assert "content-disposition" not in live.headers and 'href="/ui"' in live.text
    section = re.compile(r'<h2 id="checks">.*<h2 id="training">', re.S)
    assert section.search(page).group(0) == section.search(live.text).group(0)


def test_download_of_an_unfinished_audit_names_its_job_without_a_link(client, auth, app, db):
    running = store_audit(app, db, status="running")
    page = client.get(f"/v1/audits/{running}/report?download=1", headers=auth).text
    assert "This audit is running" in page and "<code>/ui/jobs/job_" in page and "href=" not in page


def test_download_is_a_boolean(client, auth, audit_id):
    body = problem(client.get(f"/v1/audits/{audit_id}/report?download=maybe", headers=auth), 422)
    assert body["errors"][0]["field"] == "query.download"


def test_the_routes_are_documented(app):
    paths = app.openapi()["paths"]
    csv_op = paths["/v1/audits/{audit_id}/results.csv"]["get"]
    assert csv_op["operationId"] == "getAuditResultsCsv"
    assert list(csv_op["responses"]["200"]["content"]) == ["text/csv"] and "409" in csv_op["responses"]
    report = paths["/v1/audits/{audit_id}/report"]["get"]
    assert [p["name"] for p in report["parameters"]] == ["audit_id", "download"]
