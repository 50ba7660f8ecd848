"""``sbaudit audits diff`` and ``sbaudit audits export`` (and the sbclient methods under them) against the
real API app (FastAPI's TestClient as the transport), on audits stored from a real engine run."""

from __future__ import annotations

import json

import httpx
import pytest
from stored_audits import CHANGED_S_AUC, changed_audit, engine_audit, store_audit

from sbclient import Client
from sbclient.cli import connect as cli_connect
from sbclient.cli.entry import main
from service.auth import create_key


class AppTransport(httpx.BaseTransport):
    """Hands sbclient's httpx requests to the app's TestClient. Starlette's TestClient is built on httpx2
    when that is installed (timm's huggingface_hub brings it), and its transport's responses are then not
    httpx's, so the TestClient itself, not its private transport, serves the requests."""

    def __init__(self, client) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        return httpx.Response(
            answer.status_code, headers=list(answer.headers.multi_items()), content=answer.content
        )


@pytest.fixture
def sb(client, db, monkeypatch, clean_env) -> Client:
    """An sbclient Client on the app; every CLI command uses one like it."""
    key, _ = create_key(db, owner="alice")

    def connect(args=None) -> Client:
        return Client("http://testserver", api_key=key, transport=AppTransport(client))

    monkeypatch.setattr(cli_connect, "open_client", connect)
    return connect()


@pytest.fixture
def audits(app, db) -> tuple[str, str]:
    """A simplicity-biased audit and its not-simplicity-biased counterpart."""
    return store_audit(app, db, name="before"), store_audit(app, db, changed_audit(), name="after")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_diff_prints_the_verdicts_and_every_figure_side_by_side(sb, audits, capsys):
    base, changed = audits
    code, out, err = run(capsys, "audits", "diff", base, changed)
    assert (code, err) == (0, "")
    assert "2 audits compared: the verdict changed" in out
    assert base in out and changed in out and "simplicity_biased" in out and "not_simplicity_biased" in out
    s_auc = engine_audit()["results"]["randomization"]["s_randomized_auc"]["mean"]
    line = next(line for line in out.splitlines() if "s_randomized_auc" in line and "mean" in line)
    cells = [cell.strip() for cell in line.split("│")[1:-1]]
    assert cells == ["s_randomized_auc", "", "mean", f"{s_auc:.3f}", f"{CHANGED_S_AUC:.3f}",
                     f"{CHANGED_S_AUC - s_auc:+.3f}"]  # fmt: skip
    assert "S / S^c randomization (randomization): 1 of" in out and "random.accuracy" in out
    assert out.rstrip().endswith(f"report: http://testserver/v1/audits/compare/report?ids={base},{changed}")


def test_diff_changed_shows_only_what_differs(sb, app, db, audits, capsys):
    code, out, _ = run(capsys, "audits", "diff", *audits, "--changed")
    assert code == 0 and "s_randomized_auc" in out
    assert "random.accuracy" not in out and "Feature dependence" not in out
    code, out, _ = run(capsys, "audits", "diff", audits[0], store_audit(app, db), "--changed")
    assert code == 0 and "the verdict did not change" in out and "No figure differs from the baseline." in out


def test_diff_json_is_the_api_document(sb, client, audits, capsys):
    code, out, _ = run(capsys, "audits", "diff", *audits, "--json")
    assert code == 0
    assert json.loads(out) == sb.compare_audits(audits)
    assert sb.compare_audits(audits)["checks"][0]["check"] == "randomization"


def test_diff_refusals_are_one_line(sb, app, db, audits, capsys):
    code, out, err = run(capsys, "audits", "diff", audits[0])
    assert (code, out) == (2, "") and err == "sbaudit: error: 422 query.ids: name 2 to 20 audits, not 1\n"
    running = store_audit(app, db, status="running")
    code, _, err = run(capsys, "audits", "diff", audits[0], running)
    assert (
        code == 2
        and err.startswith(f"sbaudit: error: 409 audit {running} is running")
        and err.count("\n") == 1
    )


def test_export_csv_and_html_write_the_files(sb, audits, capsys, tmp_path, monkeypatch):
    audit = audits[0]
    target = tmp_path / "results.csv"
    code, out, _ = run(capsys, "audits", "export", audit, "--format", "csv", "-o", str(target))
    assert code == 0 and out.strip() == str(target)
    written = target.read_bytes().decode()
    assert written == sb.audit_results_csv(audit)
    assert written.startswith("audit_id,check,metric,block,statistic,value\r\n")

    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "audits", "export", audit)  # csv, under the server's file name, here
    assert code == 0 and out.strip() == f"{audit}-results.csv"
    code, out, _ = run(capsys, "audits", "export", audit, "--format", "html", "-o", str(tmp_path))
    html = (tmp_path / f"{audit}-report.html").read_text()
    assert code == 0 and out.strip() == str(tmp_path / f"{audit}-report.html")
    assert html.startswith("<!doctype html>") and "href=" not in html
    # A folder written with a trailing '/' is created, as docs/cli.md shows (not a file named 'out').
    code, out, _ = run(capsys, "audits", "export", audit, "--format", "html", "-o", "out/")
    assert code == 0 and out.strip() == f"out/{audit}-report.html"
    assert (tmp_path / "out" / f"{audit}-report.html").read_text() == html
    # `audits report` saves the same file, under its own default name.
    code, out, _ = run(capsys, "audits", "report", audit)
    assert (
        code == 0
        and out.split()[0] == f"{audit}.html"
        and "href=" not in (tmp_path / f"{audit}.html").read_text()
    )


def test_a_refused_export_leaves_no_file(sb, app, db, capsys, tmp_path):
    queued = store_audit(app, db, status="queued")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsys, "audits", "export", queued, "-o", str(out_dir))
    assert code == 2 and err.startswith(f"sbaudit: error: 409 audit {queued} is queued")
    assert list(out_dir.iterdir()) == []
    with pytest.raises(SystemExit) as caught:
        main(["audits", "export", queued, "--format", "pdf"])
    assert caught.value.code == 2 and "invalid choice: 'pdf'" in capsys.readouterr().err
