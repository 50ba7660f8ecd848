"""Finished audits stored as the worker stores them (results, verdict, report sections, figure PNGs), for
the comparison and export tests (tests/service/test_audit_compare.py, test_audit_exports.py, and the CLI's
tests/sbclient/test_cli_compare_export.py).

``engine_audit()`` runs the real engine once per test process: a tiny FCN trained for a few updates on a
small LMS-5 (simplicity-biased: it reads the linear block only), audited by five checks; its figures are
drawn on first use (``engine_figures``). ``changed_audit``
derives the audit of a model that is not: its S-randomized AUC and its verdict are moved, and its sections
are rewritten by the engine's own check modules from the changed results, as the worker would.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from service.ids import new_id
from service.models import Artifact, Audit, Dataset, Job, Model, utcnow

SPEC = {"preset": "LMS-5", "n_train": 600, "n_val": 100, "n_test": 200, "seed": 3}
ARCHITECTURE = {"name": "fcn", "width": 20, "depth": 1}
TRAINING = {"optimizer": "sgd", "lr": 0.1, "batch_size": 200, "eval_every": 50, "stop": {"max_updates": 100}}
CHECKS = ["randomization", "feature_dependence", "generalization", "pgd", "uap"]
OPTIONS = {"pgd": {"steps": 3}, "uap": {"steps": 3, "epochs": 1}}
# The not-simplicity-biased audit of changed_audit: randomizing S no longer brings the AUC to chance.
CHANGED_S_AUC = 0.97
CHANGED_CODE = "both"
CHANGED_VERDICT = "relies on both S and S^c"


@lru_cache(maxsize=1)
def _engine_run() -> tuple[dict[str, Any], Any]:
    """The stored (strict JSON) audit result and the dataset it ran on."""
    import torch

    from sbengine.audit import run_audit
    from sbengine.data import build_dataset
    from sbengine.models import build_model
    from sbengine.train import TrainConfig, train
    from service.schemas.audits import AuditCreate
    from worker.runner import jsonable

    torch.set_num_threads(1)
    dataset = build_dataset(SPEC)
    torch.manual_seed(0)
    model = build_model(ARCHITECTURE, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    train(model, dataset, TrainConfig.from_dict(TRAINING), seed=0, device="cpu")
    body = AuditCreate.model_validate(
        {"model_id": "mdl_x", "checks": CHECKS, "repeats": 2, "options": OPTIONS}
    )
    raw = run_audit(model, dataset, checks=body.checks, repeats=body.repeats, seed=body.seed,
                    options=body.resolved_options(), device="cpu")  # fmt: skip
    return jsonable(raw), dataset


def engine_audit() -> dict[str, Any]:
    """``{"verdict", "verdict_code", "results", "sections", "options", "description"}`` (a fresh copy)."""
    from sbengine.audit import report_sections
    from service.schemas.audits import AuditCreate

    stored, dataset = _engine_run()
    body = AuditCreate.model_validate({"model_id": "mdl_x", "checks": CHECKS, "options": OPTIONS})
    return copy.deepcopy({
        "verdict": stored["verdict"],
        "verdict_code": stored["verdict_code"],
        "results": stored["results"],
        "sections": report_sections(stored),
        "options": body.resolved_options(),
        "description": dataset.describe(),
    })  # fmt: skip


@lru_cache(maxsize=1)
def engine_figures() -> dict[str, bytes]:
    """The PNGs the checks draw for ``engine_audit()`` (only the tests that read figures pay for them)."""
    from sbengine.audit import audit_figures

    stored, dataset = _engine_run()
    return audit_figures(stored, dataset)


def changed_audit() -> dict[str, Any]:
    """The engine audit with S-randomized AUC ``CHANGED_S_AUC`` and verdict ``CHANGED_CODE``."""
    from sbengine.audit import report_sections

    audit = engine_audit()
    audit["results"]["randomization"]["s_randomized_auc"]["mean"] = CHANGED_S_AUC
    audit["verdict"], audit["verdict_code"] = CHANGED_VERDICT, CHANGED_CODE
    audit["sections"] = report_sections(audit)
    return audit


def store_audit(
    app: Any,
    db: Any,
    audit: dict[str, Any] | None = None,
    *,
    owner: str = "alice",
    status: str = "ready",
    name: str | None = None,
    figures: bool = False,
) -> str:
    """Store a dataset, a model and an audit of ``audit`` (default: ``engine_audit()``), with the engine's
    figures if ``figures``; an audit that is not ``ready`` gets no results. Returns the audit's id."""
    run = audit or engine_audit()
    store = app.state.store
    dataset = Dataset(id=new_id("dataset"), owner=owner, status="ready", job_id=new_id("job"), spec=SPEC,
                      description=run["description"])  # fmt: skip
    model = Model(id=new_id("model"), owner=owner, status="ready", job_id=new_id("job"),
                  dataset_id=dataset.id, architecture=ARCHITECTURE, training=TRAINING, seed=0,
                  input_shape=[50], num_classes=2)  # fmt: skip
    row = Audit(id=new_id("audit"), owner=owner, name=name, status=status, job_id=new_id("job"),
                model_id=model.id, dataset_id=dataset.id,
                params={"checks": CHECKS, "options": run["options"], "simple_blocks": [0], "split": "test",
                        "repeats": 2, "seed": 0, "ensemble_size": 1})  # fmt: skip
    job = Job(id=row.job_id, owner=owner, kind="run_audit",
              state="succeeded" if status == "ready" else status,
              resource_type="audit", resource_id=row.id, params={})  # fmt: skip
    rows: list[Any] = [dataset, model, row, job]
    if status == "ready":
        row.verdict, row.verdict_code = run["verdict"], run["verdict_code"]
        row.results, row.sections = run["results"], run["sections"]
        for kind, png in (engine_figures() if figures else {}).items():
            blob = store.put_bytes(png)
            rows.append(Artifact(id=new_id("artifact"), owner=owner, resource_id=row.id, kind=kind,
                                 sha256=blob.sha256, size=blob.size, content_type="image/png",
                                 filename=f"{row.id}-{kind}.png", created_at=utcnow()))  # fmt: skip
    with db.write_session() as session:
        session.add_all(rows)
    return row.id
