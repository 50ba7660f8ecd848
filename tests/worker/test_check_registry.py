"""A check added to the registry, and nothing else, runs through run_audit, the audit job and the report.

The toy check below is registered for one test (monkeypatch removes it afterwards) and is not in the API's
request schema, so the job's parameters are edited in the database as a newer API would have written
them: the worker, the engine's audit loop, the service's report and the CLI's audit view meet it without
any change to their modules.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.models import Job
from worker.runner import run_job

pytest.importorskip("torch")

TINY_LMS5 = {"preset": "LMS-5", "n_train": 1000, "n_val": 200, "n_test": 300, "seed": 0}
FCN = {"name": "fcn", "width": 20, "depth": 1}
TRAINING = {"lr": 0.1, "batch_size": 100, "eval_every": 50, "stop": {"max_updates": 150}}
TOY_TITLE = "Toy: positive predictions"
TOY_CAPTION = "How often the model says 1, per split; a toy figure for the registry test."


def _toy_check():
    import torch

    from sbengine.checks import Check, CheckContext
    from sbengine.checks.base import figure, num, section, table
    from sbengine.evaluation import predict_logits
    from sbengine.plots import new_figure, to_png

    def run(ctx: CheckContext) -> dict[str, Any]:
        x, _ = ctx.dataset.split(ctx.split)
        logits = predict_logits(ctx.model, torch.from_numpy(x), device=ctx.device)
        share = (logits.argmax(1) == 1).float().mean().item()
        return {"split": ctx.split, "positive_share": share, "scaled": share * ctx.options["scale"]}

    def figures(result: dict[str, Any], dataset) -> dict[str, bytes]:
        plt, fig, ax = new_figure(3, 2)
        ax.bar([0], [result["positive_share"]])
        return {"toy_bar": to_png(plt, fig)}

    def report_section(result: dict[str, Any]) -> dict[str, Any]:
        rows = [["positive share", num(result.get("positive_share"))], ["scaled", num(result.get("scaled"))]]
        return section("toy", TOY_TITLE, f"Split {result.get('split')}.",
                       tables=[table("Toy numbers", ["", "value"], rows)],
                       figures=[figure("toy_bar", "Toy bar", TOY_CAPTION)])  # fmt: skip

    return Check(name="toy", run=run, report_section=report_section, figures=figures, options={"scale": 2.0})


@pytest.fixture
def toy(monkeypatch):
    from sbengine.checks import CHECKS

    check = _toy_check()
    monkeypatch.setitem(CHECKS, check.name, check)
    return check


def test_a_registered_check_runs_through_run_audit(toy):
    from sbengine.audit import audit_figures, check_options, report_sections, run_audit
    from sbengine.data import build_dataset
    from sbengine.models import build_model

    dataset = build_dataset(TINY_LMS5)
    model = build_model(FCN, input_shape=dataset.input_shape, num_classes=2)
    out = run_audit(
        model, dataset, checks=["toy", "generalization"], options={"toy": {"scale": 3.0}}, repeats=2
    )
    assert list(out["results"]) == ["toy", "generalization"] and out["verdict_code"]
    toy_result = out["results"]["toy"]
    assert toy_result["scaled"] == pytest.approx(3.0 * toy_result["positive_share"])
    assert set(audit_figures(out, dataset)) == {"toy_bar"}
    assert [s["check"] for s in report_sections(out)] == ["toy", "generalization"]
    with pytest.raises(ValueError, match=r"unknown option 'size' \(allowed: scale\)"):
        check_options(["toy"], {"toy": {"size": 1}})


def test_unregistered_again_after_the_test():
    from sbengine.checks import CHECKS

    assert "toy" not in CHECKS


def _make(client, auth, db, settings, kind: str, body: dict) -> dict:
    created = client.post(f"/v1/{kind}", json=body, headers=auth)
    assert created.status_code == 202, created.text
    assert run_job(created.json()["job_id"], settings=settings, db=db) == "succeeded"
    return client.get(f"/v1/{kind}/{created.json()['id']}", headers=auth).json()


def test_a_registered_check_is_stored_and_rendered_in_the_report(client, auth, db, settings, toy):
    settings = settings.model_copy(update={"device": "cpu"})
    dataset = _make(client, auth, db, settings, "datasets", TINY_LMS5)
    model = _make(client, auth, db, settings, "models", {"dataset_id": dataset["id"], "architecture": FCN,
                                                          "training": TRAINING})  # fmt: skip
    created = client.post("/v1/audits", json={"model_id": model["id"], "repeats": 2}, headers=auth).json()
    with db.write_session() as session:  # what an API that knows the toy check would have queued
        job = session.get(Job, created["job_id"])
        job.params = {**job.params, "checks": ["randomization", "toy"], "options": {"toy": {"scale": 0.5}}}
    assert run_job(created["job_id"], settings=settings, db=db) == "succeeded"

    audit = client.get(f"/v1/audits/{created['id']}", headers=auth).json()
    toy_result = audit["results"]["toy"]
    assert toy_result["scaled"] == pytest.approx(0.5 * toy_result["positive_share"])
    assert [s["check"] for s in audit["sections"]] == ["randomization", "toy"]
    assert "toy_bar" in {a["kind"] for a in audit["artifacts"]}

    page = client.get(f"/v1/audits/{created['id']}/report", headers=auth).text
    assert f"<h3>{TOY_TITLE}</h3>" in page and "<caption>Toy numbers</caption>" in page
    assert f'<td>scaled</td><td class="num">{toy_result["scaled"]:.3f}</td>' in page
    assert '<figure id="figure-toy_bar">' in page and TOY_CAPTION in page
    assert page.index("S / S^c randomization") < page.index(TOY_TITLE)
    report = client.get(f"/v1/audits/{created['id']}/report.json", headers=auth).json()
    assert [f["name"] for f in report["figures"]][-1] == "toy_bar"


def test_the_cli_shows_a_check_it_has_no_view_for_from_its_stored_section(toy):
    from sbclient.cli.render import audit_view, console
    from sbengine.audit import report_sections

    results = {"toy": {"split": "test", "positive_share": 0.5, "scaled": 1.25}, "unknown": {"x": 1}}
    audit = {"id": "aud_x", "status": "ready", "model_id": "mdl_x", "dataset_id": "ds_x", "verdict": "v",
             "results": results, "sections": report_sections({"results": results})}  # fmt: skip
    out = console()
    with out.capture() as captured:
        out.print(audit_view(audit))
    text = captured.get()
    assert TOY_TITLE in text and "Toy numbers" in text and "1.250" in text and "Split test." in text
    assert "unknown" not in text  # no view and no section: left out, as before
