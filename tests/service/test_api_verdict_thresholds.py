"""POST /v1/audits takes the verdict's thresholds (``verdict_thresholds``), validates them without the engine,
fills in the defaults, hands them to the job and echoes them; the reproduce commands carry them."""

from __future__ import annotations

import json
import shlex

from service_testing import fields, problem
from sqlalchemy import select

from service.models import Audit, Job
from service.reports.reproduce import commands

DEFAULTS = {"min_predictive": 0.6, "chance_margin": 0.1, "unchanged_margin": 0.02, "mostly_ratio": 2.0}


def test_thresholds_are_filled_in_echoed_and_sent_to_the_job(client, auth, db, ready_model):
    model_id = ready_model()
    plain = client.post("/v1/audits", json={"model_id": model_id}, headers=auth).json()
    assert plain["verdict_thresholds"] == DEFAULTS

    body = {"model_id": model_id, "verdict_thresholds": {"chance_margin": 0.05, "mostly_ratio": 3}}
    response = client.post("/v1/audits", json=body, headers=auth)
    assert response.status_code == 202, response.text
    expected = {**DEFAULTS, "chance_margin": 0.05, "mostly_ratio": 3.0}
    assert response.json()["verdict_thresholds"] == expected
    assert (
        client.get(f"/v1/audits/{response.json()['id']}", headers=auth).json()["verdict_thresholds"]
        == expected
    )
    with db.read_session() as session:
        job = session.scalar(select(Job).where(Job.id == response.json()["job_id"]))
        assert job.params["verdict_thresholds"] == expected


def test_bad_thresholds_are_422s_naming_the_threshold(client, auth, ready_model):
    model_id = ready_model()
    cases = [
        ({"chance_margin": -0.1}, "body.verdict_thresholds.chance_margin"),
        ({"unchanged_margin": 1.5}, "body.verdict_thresholds.unchanged_margin"),
        ({"min_predictive": "0.6"}, "body.verdict_thresholds.min_predictive"),
        ({"mostly_ratio": 0.5}, "body.verdict_thresholds.mostly_ratio"),
        ({"mostly_ratio": True}, "body.verdict_thresholds.mostly_ratio"),
        ({"chance_band": 0.1}, "body.verdict_thresholds.chance_band"),
    ]
    for thresholds, field in cases:
        response = client.post("/v1/audits", json={"model_id": model_id, "verdict_thresholds": thresholds},
                               headers=auth)  # fmt: skip
        assert field in fields(response), thresholds
    problem(
        client.post("/v1/audits", json={"model_id": model_id, "verdict_thresholds": 0.1}, headers=auth), 422
    )


def test_an_audit_stored_before_thresholds_reads_null(client, auth, db, ready_model):
    audit = client.post("/v1/audits", json={"model_id": ready_model()}, headers=auth).json()
    with db.write_session() as session:
        row = session.get(Audit, audit["id"])
        row.params = {k: v for k, v in row.params.items() if k != "verdict_thresholds"}
    read = client.get(f"/v1/audits/{audit['id']}", headers=auth).json()
    assert read["verdict_thresholds"] is None and read["verdict_code"] is None


def test_the_reproduce_commands_carry_the_thresholds():
    from sbclient.cli.entry import build_parser

    thresholds = {**DEFAULTS, "chance_margin": 0.05}
    audit = Audit(
        id="aud_t", name=None, params={"checks": ["randomization"], "verdict_thresholds": thresholds}
    )
    out = commands(base_url="http://h:1", dataset=None, model=None, audit=audit)
    assert out["audit"]["verdict_thresholds"] == thresholds
    line = out["cli"][-1].replace("\\\n", " ").replace("$MODEL_ID", "mdl_x").replace("$DATASET_ID", "ds_x")
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert json.loads(args.verdict_thresholds) == thresholds
