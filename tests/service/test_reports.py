"""The audit report (HTML and report.json) and the web UI, in process, on a real engine result.

The results and figures come from the real engine (a tiny FCN trained for a few updates on a small LMS-5),
stored the way the worker stores them; the API app then renders them. Also: pending / failed / foreign /
missing-blob reports, cookie authentication (GET only), login, logout and the ``next`` check.

It is over 400 lines because every report test shares one real engine result (built once per module);
splitting the file would build it once per file.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any

import pytest
from markupsafe import escape
from service_testing import problem

from service.auth import create_key
from service.ids import new_id
from service.models import Artifact, Audit, Dataset, Job, Model, utcnow
from service.reports.content import HEADLINES, VERDICT_LABELS
from service.schemas.audits import AuditCreate
from service.schemas.reports import ReportRead

SPEC = {"preset": "LMS-5", "n_train": 1000, "n_val": 200, "n_test": 300, "seed": 3}
ARCHITECTURE = {"name": "fcn", "width": 20, "depth": 1}
TRAINING = {"optimizer": "sgd", "lr": 0.1, "batch_size": 256, "eval_every": 50, "stop": {"max_updates": 150}}
AUDIT = {"checks": ["randomization", "feature_dependence", "generalization", "pgd", "uap"], "repeats": 2,
         "options": {"pgd": {"steps": 5}, "uap": {"steps": 5, "epochs": 1}}}  # fmt: skip
EVIL = '<script>alert("owned")</script>'
ESCAPED_EVIL = str(escape(EVIL))  # as Jinja2 writes it: &lt;script&gt;alert(&#34;owned&#34;)...
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def engine_run() -> dict[str, Any]:
    """What the worker would store for a dataset, a trained model and a finished audit (JSON + PNGs)."""
    import torch

    from sbengine.audit import audit_figures, report_sections, run_audit
    from sbengine.data import build_dataset
    from sbengine.models import build_model
    from sbengine.plots import training_curves
    from sbengine.train import TrainConfig, train
    from worker.handlers.dataset import bayes_summary
    from worker.runner import jsonable

    torch.set_num_threads(1)
    dataset = build_dataset(SPEC)
    torch.manual_seed(0)
    model = build_model(ARCHITECTURE, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    trained = train(model, dataset, TrainConfig.from_dict(TRAINING), seed=0, device="cpu").to_dict()
    history = trained.pop("history")
    body = AuditCreate.model_validate({"model_id": "mdl_x", **AUDIT})
    raw = run_audit(model, dataset, checks=body.checks, repeats=body.repeats, seed=body.seed,
                    options=body.resolved_options())  # fmt: skip
    description = dataset.describe()
    description["bayes_accuracy"] = bayes_summary(description)
    return {
        "description": description,
        "model_result": jsonable(trained),
        "curves": training_curves(history),
        "audit": jsonable(raw),
        "sections": report_sections(jsonable(raw)),
        "figures": audit_figures(raw, dataset),
        "options": body.resolved_options(),
    }


def _artifact(store, owner: str, resource_id: str, kind: str, data: bytes, content_type: str) -> Artifact:
    blob = store.put_bytes(data)
    return Artifact(
        id=new_id("artifact"), owner=owner, resource_id=resource_id, kind=kind, sha256=blob.sha256,
        size=blob.size, content_type=content_type, filename=f"{resource_id}-{kind}", created_at=utcnow(),
    )  # fmt: skip


@pytest.fixture
def stored(app, db, engine_run):
    """``stored(owner=..., status=..., name=...) -> ids``: rows and artifacts as the worker leaves them
    (``legacy=True``: as it left them before it stored report sections)."""
    store = app.state.store

    def make(
        owner: str = "alice",
        status: str = "ready",
        name: str | None = EVIL,
        error: str | None = None,
        legacy: bool = False,
    ):
        run = engine_run
        dataset = Dataset(id=new_id("dataset"), owner=owner, name=name, status="ready", job_id=new_id("job"),
                          spec=SPEC, description=run["description"])  # fmt: skip
        model = Model(id=new_id("model"), owner=owner, name=name, status="ready", job_id=new_id("job"),
                      dataset_id=dataset.id, architecture=ARCHITECTURE, training=TRAINING, seed=0,
                      input_shape=[50], num_classes=2, result=run["model_result"])  # fmt: skip
        audit = Audit(id=new_id("audit"), owner=owner, name=name, status=status, job_id=new_id("job"),
                      model_id=model.id, dataset_id=dataset.id,
                      params={"checks": AUDIT["checks"], "options": run["options"], "simple_blocks": [0],
                              "split": "test", "repeats": 2, "seed": 0, "ensemble_size": 1,
                              "environment": {"torch": "2.x", "device": "cpu"}})  # fmt: skip
        job = Job(id=audit.job_id, owner=owner, kind="run_audit",
                  state={"ready": "succeeded"}.get(status, status),
                  resource_type="audit", resource_id=audit.id, params={}, error=error)  # fmt: skip
        rows: list[Any] = [dataset, model, audit, job]
        if status == "ready":
            audit.verdict, audit.verdict_code = run["audit"]["verdict"], run["audit"]["verdict_code"]
            audit.results = run["audit"]["results"]
            audit.sections = None if legacy else run["sections"]
            rows += [
                _artifact(store, owner, audit.id, k, png, "image/png") for k, png in run["figures"].items()
            ]
            rows.append(_artifact(store, owner, model.id, "training_curves", run["curves"], "image/png"))
        audit.error = error
        with db.write_session() as session:
            session.add_all(rows)
        return {"audit": audit.id, "model": model.id, "dataset": dataset.id, "job": job.id}

    return make


def test_report_shows_verdict_tables_and_every_figure(client, auth, stored, engine_run):
    ids = stored()
    response = client.get(f"/v1/audits/{ids['audit']}/report", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = response.text

    verdict = html.escape(engine_run["audit"]["verdict"], quote=False)
    assert page.index(verdict) < page.index("<table")
    label = VERDICT_LABELS[engine_run["audit"]["verdict_code"]]
    assert f'<section class="verdict {label}" id="verdict">' in page and HEADLINES[label] in page

    # Every figure, and the model's training curves, inline as PNG data URIs; nothing loads from elsewhere.
    images = DATA_URI.findall(page)
    assert len(images) == len(engine_run["figures"]) + 1
    for encoded in images:
        assert base64.b64decode(encoded).startswith(PNG_SIGNATURE)
    assert "http://" not in page.split("Reproduce this audit")[0] and "https://" not in page
    assert "Under simplicity bias the S-randomized histogram collapses across zero" in page

    # The numbers in the tables are the results'.
    rand = engine_run["audit"]["results"]["randomization"]
    s_auc = rand["s_randomized_auc"]
    assert f'<td class="num">{rand["auc"]:.3f}</td>' in page
    assert f"{s_auc['mean']:.3f} ± {s_auc['std']:.3f}" in page
    pgd = engine_run["audit"]["results"]["pgd"]
    assert f'<td class="num">{pgd["accuracy"]:.3f}</td>' in page
    first_block = engine_run["audit"]["results"]["feature_dependence"]["random"][0]
    assert f'<td>{first_block["group"]}</td><td class="num">{first_block["coordinates"]}</td>' in page

    # What the user named is escaped everywhere; the page carries the security headers.
    assert EVIL not in page and ESCAPED_EVIL in page
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "img-src data:" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"

    # Dataset, model, seeds and versions, and how to reproduce it.
    for text in ("49x 5-slab", "width=20", "2.x", "Reproduce this audit", "sbaudit datasets create --body",
                 "sbaudit models train", "sbaudit audits run", "curl -sS -X POST"):  # fmt: skip
        assert html.escape(text, quote=False) in page, text


def test_report_json_matches_the_schema_and_the_results(client, auth, stored, engine_run):
    ids = stored()
    response = client.get(f"/v1/audits/{ids['audit']}/report.json", headers=auth)
    assert response.status_code == 200, response.text
    report = ReportRead.model_validate(response.json())
    assert report.results == engine_run["audit"]["results"]
    assert report.verdict == engine_run["audit"]["verdict"]
    assert {f.name for f in report.figures} == set(engine_run["figures"])
    assert all(f.caption and f.url == f"/v1/artifacts/{f.artifact_id}" for f in report.figures)
    assert report.figures[0].name == "logit_histograms"
    assert report.training_curves is not None and report.environment == {"torch": "2.x", "device": "cpu"}
    assert report.reproduce.dataset == SPEC
    assert report.reproduce.model["architecture"] == ARCHITECTURE
    assert report.reproduce.audit["checks"] == AUDIT["checks"] and report.reproduce.audit["repeats"] == 2
    assert AuditCreate.model_validate({**report.reproduce.audit, "model_id": "mdl_x", "dataset_id": "ds_x"})
    # The report routes are part of the API contract, the UI pages are not.
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/audits/{audit_id}/report" in paths and "/v1/audits/{audit_id}/report.json" in paths
    schema = paths["/v1/audits/{audit_id}/report.json"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]
    assert schema["schema"]["$ref"].endswith("/ReportRead")
    assert not [p for p in paths if p.startswith("/ui") or p == "/"]


@pytest.mark.parametrize("status", ["waiting", "queued", "running"])
def test_an_unfinished_audit_links_to_its_job(client, auth, stored, status):
    ids = stored(status=status)
    page = client.get(f"/v1/audits/{ids['audit']}/report", headers=auth).text
    assert f"This audit is {status}" in page and f'href="/ui/jobs/{ids["job"]}"' in page
    assert "<img" not in page
    report = client.get(f"/v1/audits/{ids['audit']}/report.json", headers=auth).json()
    assert report["verdict_label"] == status and report["figures"] == [] and report["results"] is None


def test_a_failed_audit_shows_its_error_escaped(client, auth, stored):
    ids = stored(status="failed", error=f"boom {EVIL}")
    page = client.get(f"/v1/audits/{ids['audit']}/report", headers=auth).text
    assert "The audit failed" in page and f"boom {ESCAPED_EVIL}" in page and EVIL not in page


def test_another_owners_or_an_unknown_audit_is_404(client, auth, other_auth, stored):
    ids = stored(owner="alice")
    for path in (f"/v1/audits/{ids['audit']}/report", f"/v1/audits/{ids['audit']}/report.json"):
        problem(client.get(path, headers=other_auth), 404)
    problem(client.get("/v1/audits/aud_AAAAAAAAAAAAAAAA/report", headers=auth), 404)
    problem(client.get("/v1/audits/not-an-id/report.json", headers=auth), 404)


def test_a_missing_blob_is_a_visible_note_not_an_error(app, client, auth, db, stored, engine_run):
    ids = stored()
    with db.read_session() as session:
        blob = session.query(Artifact).filter_by(resource_id=ids["audit"], kind="pgd_heatmap").one().sha256
    app.state.store.delete(blob)
    response = client.get(f"/v1/audits/{ids['audit']}/report", headers=auth)
    assert response.status_code == 200
    assert "missing from the artifact store" in response.text
    # One figure fewer embedded (the training curves make up for it), its title and caption still there.
    assert len(DATA_URI.findall(response.text)) == len(engine_run["figures"])
    assert "PGD perturbations in canonical coordinates" in response.text


def test_no_key_is_401_for_api_clients_and_a_login_redirect_for_browsers(client, stored):
    ids = stored()
    path = f"/v1/audits/{ids['audit']}/report"
    problem(client.get(path), 401)
    problem(client.get(f"{path}.json", headers={"Accept": "text/html"}), 401)
    browser = client.get(path, headers={"Accept": "text/html,application/xhtml+xml"}, follow_redirects=False)
    assert browser.status_code == 303 and browser.headers["location"] == f"/ui/login?next={path}"


def _login(client, key: str, next_path: str = "/ui"):
    return client.post("/ui/login", data={"key": key, "next": next_path}, follow_redirects=False)


def test_login_sets_an_http_only_strict_cookie_and_redirects(client, db, stored):
    key, _ = create_key(db, owner="alice")
    form = client.get("/ui/login?next=/ui/jobs/job_x")
    assert (
        form.status_code == 200
        and 'value="/ui/jobs/job_x"' in form.text
        and "form-action 'self'" in (form.headers["content-security-policy"])
    )
    wrong = _login(client, "sbk_wrong")
    assert wrong.status_code == 401 and "not valid" in wrong.text and "set-cookie" not in wrong.headers
    assert _login(client, "").status_code == 401
    response = _login(client, key)
    assert response.status_code == 303 and response.headers["location"] == "/ui"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"sbaudit_key={key}") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/" in cookie


@pytest.mark.parametrize(
    ("next_path", "expected"),
    [("/v1/audits/aud_x/report", "/v1/audits/aud_x/report"), ("//evil.example/x", "/ui"),
     ("/\\evil.example", "/ui"), ("https://evil.example/", "/ui"), ("ui", "/ui"), ("/ui\r\nX: y", "/ui")],
)  # fmt: skip
def test_login_goes_on_to_local_paths_only(client, db, next_path, expected):
    key, _ = create_key(db, owner="alice")
    assert _login(client, key, next_path).headers["location"] == expected


def test_cookie_authenticates_gets_only(client, db, stored):
    ids = stored(owner="alice")
    key, _ = create_key(db, owner="alice")
    client.cookies.set("sbaudit_key", key)
    assert client.get(f"/v1/audits/{ids['audit']}").status_code == 200
    assert client.get(f"/v1/audits/{ids['audit']}/report").status_code == 200
    assert client.get(f"/v1/jobs/{ids['job']}").json()["id"] == ids["job"]
    # A cookie never authorizes a change (CSRF): POST and DELETE need the Authorization header.
    problem(client.post("/v1/audits", json={"model_id": ids["model"]}), 401)
    problem(client.delete(f"/v1/audits/{ids['audit']}"), 401)
    problem(client.post(f"/v1/jobs/{ids['job']}/cancel"), 401)
    # An Authorization header, when present, is what counts.
    problem(client.get(f"/v1/audits/{ids['audit']}", headers={"Authorization": "Bearer sbk_wrong"}), 401)
    client.cookies.set("sbaudit_key", "sbk_wrong")
    problem(client.get(f"/v1/audits/{ids['audit']}"), 401)


def test_pages_need_a_login_and_logout_clears_the_cookie(client, db, stored):
    ids = stored(owner="alice", name="first audit")
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui"
    redirect = client.get("/ui", follow_redirects=False)
    assert redirect.status_code == 303 and redirect.headers["location"] == "/ui/login?next=/ui"
    job_path = f"/ui/jobs/{ids['job']}"
    assert client.get(job_path, follow_redirects=False).headers["location"] == f"/ui/login?next={job_path}"

    key, _ = create_key(db, owner="alice")
    assert _login(client, key).status_code == 303
    index = client.get("/ui")
    assert index.status_code == 200 and ids["audit"] in index.text and "first audit" in index.text
    assert f'href="/v1/audits/{ids["audit"]}/report"' in index.text and f'href="{job_path}"' in index.text
    assert "default-src 'none'" in index.headers["content-security-policy"]
    job = client.get(job_path)
    assert job.status_code == 200 and "succeeded" in job.text and "Open the audit report" in job.text
    assert 'EventSource("/v1/jobs/" + encodeURIComponent(jobId) + "/events")' in job.text
    missing = client.get("/ui/jobs/job_AAAAAAAAAAAAAAAA")
    assert missing.status_code == 404 and "No such job" in missing.text

    out = client.post("/ui/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert 'sbaudit_key=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_another_owners_job_page_is_not_found(client, db, stored):
    ids = stored(owner="bob")
    key, _ = create_key(db, owner="alice")
    client.cookies.set("sbaudit_key", key)
    assert client.get(f"/ui/jobs/{ids['job']}").status_code == 404
    assert ids["audit"] not in client.get("/ui").text


def test_results_without_a_readable_section_are_shown_raw(client, auth, db, stored):
    ids = stored()
    odd = {"randomization": {"auc": 0.5}, "future_check": {"x": EVIL}, "pgd": {"accuracy": 0.25}}
    broken = [{"check": "randomization", "title": "S / S^c randomization", "tables": [{"rows": 3}]},
              {"check": "pgd", "title": f"PGD {EVIL}", "summary": None, "tables": [],
               "figures": "none"}]  # fmt: skip
    with db.write_session() as session:
        audit = session.get(Audit, ids["audit"])
        audit.results, audit.sections = odd, broken
    response = client.get(f"/v1/audits/{ids['audit']}/report", headers=auth)
    assert response.status_code == 200, response.text
    page = response.text
    # No section for future_check, an unreadable one for randomization: their raw results; pgd's is read.
    assert (
        "Future check" in page
        and "Randomization" in page
        and page.count("The raw results of this check") == 2
    )
    assert f"<h3>PGD {ESCAPED_EVIL}</h3>" in page and EVIL not in page
    assert client.get(f"/v1/audits/{ids['audit']}/report.json", headers=auth).json()["results"] == odd


def test_legacy_results_the_report_cannot_tabulate_are_shown_raw(client, auth, db, stored):
    ids = stored(legacy=True)
    odd = {"randomization": {"auc": "not a number", "s_randomized_auc": [1, 2]}, "future_check": {"x": EVIL}}
    with db.write_session() as session:
        session.get(Audit, ids["audit"]).results = odd
    response = client.get(f"/v1/audits/{ids['audit']}/report", headers=auth)
    assert response.status_code == 200, response.text
    assert "Future check" in response.text and "The raw results of this check" in response.text
    assert EVIL not in response.text
    assert client.get(f"/v1/audits/{ids['audit']}/report.json", headers=auth).json()["results"] == odd


def _checks_and_figures(page: str) -> str:
    return page[page.index('<h2 id="checks">') : page.index('<h2 id="training">')]


def test_an_audit_stored_before_sections_reads_like_a_new_one(client, auth, stored, engine_run):
    """service/reports/legacy.py tabulates old audits (no stored sections) exactly as the engine's check
    modules do: same tables, same figures in the same order with the same titles and captions."""
    new, old = stored(), stored(legacy=True)
    pages = [client.get(f"/v1/audits/{ids['audit']}/report", headers=auth).text for ids in (new, old)]
    assert _checks_and_figures(pages[0]) == _checks_and_figures(pages[1])
    assert "<h3>Universal adversarial perturbation</h3>" in pages[0]
    reports = [
        client.get(f"/v1/audits/{ids['audit']}/report.json", headers=auth).json() for ids in (new, old)
    ]
    assert [f["title"] for f in reports[0]["figures"]] == [f["title"] for f in reports[1]["figures"]]
    assert [f["caption"] for f in reports[0]["figures"]] == [f["caption"] for f in reports[1]["figures"]]
    assert (
        reports[0]["audit"]["sections"] == engine_run["sections"] and reports[1]["audit"]["sections"] is None
    )


def test_legacy_tables_match_the_engine_sections_for_every_check(engine_run):
    """The same check for all six checks, including the ensemble (not in the stored run) and empty results."""
    from sbengine.checks import CHECKS
    from service.reports import legacy
    from service.reports.sections import read_section

    member = {"test_accuracy": 0.99, "s_randomized_auc": {"mean": 0.5, "std": 0.01},
              "sc_randomized_auc": {"mean": 1.0, "std": 0.0}, "verdict_code": "exclusively_s"}  # fmt: skip
    results = {**engine_run["audit"]["results"],
               "ensemble": {"members": [member, member], "ensemble": member,
                            "summary": "as its members"}}  # fmt: skip
    assert set(results) == set(legacy.BUILDERS) == set(CHECKS)
    for check, result in results.items():
        for value in (result, {} if check != "feature_dependence" else {"random": []}):
            engine = CHECKS[check].report_section(value)
            assert read_section(engine) == legacy.BUILDERS[check](value), check
            for f in engine["figures"]:
                assert legacy.CAPTIONS[f["name"]] == (f["title"], f["caption"]), f["name"]


def test_a_browser_with_a_stale_cookie_is_sent_to_log_in_again(client, stored):
    ids = stored()
    client.cookies.set("sbaudit_key", "sbk_revoked")
    path = f"/v1/audits/{ids['audit']}/report"
    response = client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/ui/login?next={path}"
    assert "sbaudit_key=" in response.headers["set-cookie"]  # the stale cookie is dropped
    problem(client.get(path), 401)  # not a browser: the API's answer


def test_reproduce_replays_generated_inputs_and_says_what_an_upload_needs():
    from service.reports.reproduce import commands

    dataset = Dataset(id="ds_a", spec={**SPEC, "name": "it's"})
    model = Model(id="mdl_a", source="train", architecture=ARCHITECTURE, training=TRAINING, seed=4, name=None)
    audit = Audit(id="aud_a", name=None, params={"checks": ["randomization"], "repeats": 3, "seed": 1})
    out = commands(base_url="http://h:1", dataset=dataset, model=model, audit=audit)
    assert out["dataset"] == {**SPEC, "name": "it's"} and out["notes"] == []
    assert out["model"] == {
        "dataset_id": "$DATASET_ID",
        "architecture": ARCHITECTURE,
        "training": TRAINING,
        "seed": 4,
    }
    assert out["audit"] == {"model_id": "$MODEL_ID", "dataset_id": "$DATASET_ID", "checks": ["randomization"],
                            "repeats": 3, "seed": 1}  # fmt: skip
    assert "--repeats 3" in out["cli"][-1] and "--checks randomization" in out["cli"][-1]
    assert "'\"$MODEL_ID\"'" in out["curl"][-1]  # the new ids expand inside the quoted body

    uploaded = commands(
        base_url="http://h:1",
        dataset=Dataset(id="ds_b", spec={"upload": {"sha256": "0" * 64}}),
        model=Model(id="mdl_b", source="upload", architecture=ARCHITECTURE, training={}, seed=0),
        audit=audit,
    )
    assert uploaded["dataset"] is None and uploaded["model"] is None
    assert len(uploaded["notes"]) == 2 and "sbaudit datasets upload" in uploaded["notes"][0]
    assert uploaded["curl"][-1].startswith("RESPONSE=$(curl") and len(uploaded["curl"]) == 2


def test_the_reproduce_commands_are_ones_the_cli_accepts():
    """Every `sbaudit ...` line of the reproduce section parses with the real CLI, to the same request
    body."""
    import shlex

    from sbclient.cli.entry import build_parser
    from service.reports.reproduce import commands

    ensemble = Audit(
        id="aud_e",
        name=None,
        params={
            "checks": ["randomization", "pgd"],
            "model_ids": ["mdl_1", "mdl_2"],
            "combine": "probs",
            "simple_blocks": [0],
            "split": "val",
            "options": {"pgd": {"eps": 0.5}},
            "repeats": 2,
            "seed": 3,
        },
    )
    model = Model(id="mdl_a", source="train", architecture=ARCHITECTURE, training=TRAINING, seed=4, name=None)
    out = commands(base_url="http://h:1", dataset=Dataset(id="ds_a", spec=SPEC), model=model, audit=ensemble)
    parser = build_parser()
    assert out["cli"][0].startswith("export SBAUDIT_URL=http://h:1")
    for line in out["cli"][1:]:
        line = line.replace("\\\n", " ").replace("$DATASET_ID", "ds_x").replace("$MODEL_ID", "mdl_x")
        if line.startswith(("DATASET_ID=$(", "MODEL_ID=$(")):
            assert line.endswith(" --wait --json | jq -r .id)"), line
            line = line[line.index("$(") + 2 : -len(" | jq -r .id)")]
        argv = shlex.split(line)
        assert argv[0] == "sbaudit"
        args = parser.parse_args(argv[1:])
        assert args.handler is not None
    assert (args.combine, args.split, args.repeats, args.model_ids) == ("probs", "val", 2, "mdl_1,mdl_2")
