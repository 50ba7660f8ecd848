"""Job budgets (issue 14, item 1): a request whose job would need more memory or work than the server
allows is refused with a 422 naming the fields behind the estimate, before anything is queued; an accepted
job shows its estimate; and a generated dataset's peak memory stays within what was estimated for it.

On main the issue's request was accepted (202) and its job grew past 18 GB; generation held about 28 bytes
per value at its peak (a float64 column list, its stacked copy, the rotated product and the float32 result).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from service_testing import LMS5_DESCRIPTION, problem

from service import budget, estimates
from service.ids import new_id
from service.model_cost import network_cost
from service.models import Dataset, Job, Model
from service.schemas.audits import AuditCreate
from service.schemas.datasets import PRESET_FEATURES, DatasetCreate
from service.schemas.models import ModelCreate
from service.settings import JOB_MEMORY_SHARE, Settings, host_memory_bytes

REPO = Path(__file__).resolve().parents[2]
LIMIT_BYTES = int(9.6 * (1 << 30))  # the issue's 24 GB machine: 40% of it
LIMIT_WORK = 10**13
ISSUE_REQUEST = {"blocks": [{"type": "noise", "count": 4096}], "n_train": 1000000, "n_val": 1000000,
                 "n_test": 1000000}  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path, clean_env: None) -> Settings:
    """Limits fixed here, so the tests do not depend on the memory of the machine running them."""
    return Settings(
        data_dir=tmp_path / "data",
        progress_interval_seconds=0.0,
        max_job_memory_bytes=LIMIT_BYTES,
        max_job_work=LIMIT_WORK,
    )


def rows(db, table) -> int:
    with db.read_session() as session:
        return session.query(table).count()


def stored_model(db, dataset_id: str, architecture: dict) -> str:
    """A ready trained model row of ``architecture`` on an LMS-5-shaped dataset."""
    row = Model(id=new_id("model"), owner="alice", status="ready", job_id=new_id("job"),
                dataset_id=dataset_id, architecture=architecture, training={}, seed=0, input_shape=[50],
                num_classes=2)  # fmt: skip
    with db.write_session() as session:
        session.add(row)
    return row.id


def over_budget(response) -> dict:
    body = problem(response, 422)
    assert body["type"] == "urn:sbaudit:problem:over-budget"
    return body


def test_the_issues_request_is_refused_naming_fields_and_bytes(client, auth, db):
    body = over_budget(client.post("/v1/datasets", json=ISSUE_REQUEST, headers=auth))
    named = [e["field"] for e in body["errors"]]
    assert {"body.n_train", "body.n_val", "body.n_test", "body.blocks"} <= set(named)
    assert body["estimate"]["memory_bytes"] >= 3_000_000 * 4096 * 4  # the float32 rows alone
    assert body["limit"] == {"memory_bytes": LIMIT_BYTES}
    assert "(3000000 rows × 4096 features, float32)" in body["detail"]
    assert "over this server's limit of 9.6 GiB (SBAUDIT_MAX_JOB_MEMORY_BYTES)" in body["detail"]
    assert rows(db, Job) == 0 and rows(db, Dataset) == 0  # nothing queued, nothing stored


def test_a_model_over_budget_is_refused_naming_its_fields(client, auth, db, ready_dataset):
    dataset_id = ready_dataset()
    wide = {"dataset_id": dataset_id, "architecture": {"name": "fcn", "width": 8192, "depth": 64}}
    body = over_budget(client.post("/v1/models", json=wide, headers=auth))
    named = [e["field"] for e in body["errors"]]
    assert {"body.architecture.width", "body.architecture.depth"} <= set(named)
    assert "SBAUDIT_MAX_JOB_MEMORY_BYTES" in body["detail"]

    long = {"dataset_id": dataset_id, "architecture": {"name": "fcn", "width": 1000, "depth": 4},
            "training": {"stop": {"max_updates": 10_000_000}}, "ensemble_size": 8}  # fmt: skip
    body = over_budget(client.post("/v1/models", json=long, headers=auth))
    named = [e["field"] for e in body["errors"]]
    assert {"body.training.stop.max_updates", "body.ensemble_size", "body.architecture.width"} <= set(named)
    assert body["limit"] == {"work": LIMIT_WORK} and "SBAUDIT_MAX_JOB_WORK" in body["detail"]
    assert rows(db, Job) == 0


def test_an_audit_over_budget_is_refused_naming_its_fields(client, auth, db, ready_dataset, ready_model):
    big_test_split = {**LMS5_DESCRIPTION, "sizes": {"train": 100, "val": 10, "test": 200_000}}
    model_id = ready_model(dataset_id=ready_dataset(description=big_test_split))
    attack = {"model_id": model_id, "checks": ["pgd"], "options": {"pgd": {"steps": 1000, "restarts": 100}}}
    body = over_budget(client.post("/v1/audits", json=attack, headers=auth))
    named = [e["field"] for e in body["errors"]]
    assert {"body.options.pgd.steps", "body.options.pgd.restarts", "body.split"} <= set(named)

    wide = {"name": "fcn", "width": 1000, "depth": 4}
    members = [stored_model(db, ready_dataset(description=big_test_split), wide) for _ in range(3)]
    ensemble = {"model_ids": members, "checks": ["randomization", "ensemble"], "repeats": 100}
    named = [
        e["field"] for e in over_budget(client.post("/v1/audits", json=ensemble, headers=auth))["errors"]
    ]
    assert {"body.repeats", "body.model_ids"} <= set(named)
    assert rows(db, Job) == 0


def test_accepted_jobs_show_their_estimate(client, auth, ready_dataset, ready_model):
    created = [
        client.post("/v1/datasets", json={"preset": "LMS-5"}, headers=auth),
        client.post("/v1/models", json={"dataset_id": ready_dataset(), "architecture": {"name": "fcn"}},
                    headers=auth),
        client.post("/v1/audits", json={"model_id": ready_model(), "checks": ["randomization", "pgd"]},
                    headers=auth),
    ]  # fmt: skip
    for response in created:
        assert response.status_code == 202, response.text
        job = client.get(f"/v1/jobs/{response.json()['job_id']}", headers=auth).json()
        estimate = job["estimate"]
        assert 0 < estimate["memory_bytes"] <= LIMIT_BYTES and 0 < estimate["work"] <= LIMIT_WORK
        assert sum(estimate["parts"]["memory_bytes"].values()) == estimate["memory_bytes"]
        assert sum(estimate["parts"]["work"].values()) == estimate["work"]


def test_the_documented_requests_fit_the_default_work_budget():
    """README and docs/checks.md requests and the paper's presets at their default sizes."""
    limit = Settings.model_fields["max_job_work"].default
    lms5 = {**LMS5_DESCRIPTION, "sizes": {"train": 100_000, "val": 10_000, "test": 10_000}}
    fcn = {"name": "fcn", "width": 100, "depth": 2}
    for preset in [*PRESET_FEATURES, "MNIST-CIFAR"]:
        assert estimates.dataset_estimate(DatasetCreate(preset=preset)).memory_bytes < 2 << 30, preset
    trainings = [
        {"architecture": fcn,
         "training": {"lr": 0.1, "weight_decay": 5e-5, "stop": {"train_accuracy": 0.9999}}},
        {"architecture": fcn, "training": {"lr": 0.1, "stop": {"train_accuracy": 0.9999}},
         "ensemble_size": 5},
        {"architecture": fcn, "training": {"lr": 0.1, "stop": {"max_updates": 5000}, "select": "best_val",
         "adversarial": {"attack": {"norm": "l2", "eps": 0.3, "step_size": 0.05, "steps": 10}}}},
    ]  # fmt: skip
    for request in trainings:
        body = ModelCreate.model_validate({"dataset_id": "ds", **request})
        assert estimates.training_estimate(body, lms5, Settings()).work_total < limit
    audits = [
        {"checks": ["randomization", "feature_dependence"], "simple_blocks": [0]},
        {"checks": ["randomization", "generalization", "pgd", "uap"],
         "options": {"pgd": {"norm": "l2", "eps": 0.5, "steps": 20}, "uap": {"method": "svd", "eps": 1.0}}},
    ]  # fmt: skip
    for request in audits:
        body = AuditCreate.model_validate({"model_id": "mdl", **request})
        assert estimates.audit_estimate(body, [network_cost(fcn, [50], 2)], lms5).work_total < limit


# --- the estimates grow with what drives them ---------------------------------------------------------


def increasing(values: list[int]) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


def dataset_cost(**changes):
    request = {"blocks": [{"type": "linear"}, {"type": "noise", "count": 10}], "n_train": 1000, **changes}
    return estimates.dataset_estimate(DatasetCreate.model_validate(request))


def training_cost(description=LMS5_DESCRIPTION, **changes):
    request = {"dataset_id": "ds", "architecture": {"name": "fcn", "width": 100, "depth": 2}, **changes}
    return estimates.training_estimate(ModelCreate.model_validate(request), description, Settings())


def audit_cost(members=1, description=LMS5_DESCRIPTION, **changes):
    body = AuditCreate.model_validate({"model_id": "mdl", "checks": ["randomization", "pgd"], **changes})
    return estimates.audit_estimate(body, [network_cost({"name": "fcn"}, [50], 2)] * members, description)


def test_dataset_estimates_grow_with_rows_and_features():
    assert increasing([dataset_cost(n_train=n).memory_bytes for n in (1000, 10_000, 100_000)])
    wider = [[{"type": "linear"}, {"type": "noise", "count": c}] for c in (10, 100, 1000)]
    assert increasing([dataset_cost(blocks=blocks).memory_bytes for blocks in wider])
    assert increasing([dataset_cost(blocks=blocks).work_total for blocks in wider])
    assert dataset_cost(rotate=False).memory_bytes < dataset_cost().memory_bytes
    images = [estimates.dataset_estimate(DatasetCreate(preset="MNIST-CIFAR", n_train=n)) for n in (100, 1000)]
    assert increasing([e.memory_bytes for e in images])


def test_training_estimates_grow_with_width_depth_members_and_steps():
    def arch(**options):
        return {"architecture": {"name": "fcn", "width": 100, "depth": 2, **options}}

    for key in ("memory_bytes", "work"):
        assert increasing([training_cost(**arch(width=w)).as_json()[key] for w in (10, 100, 1000)])
        assert increasing([training_cost(**arch(depth=d)).as_json()[key] for d in (1, 4, 16)])
        assert increasing([training_cost(ensemble_size=m).as_json()[key] for m in (1, 4, 16)])
        assert increasing([training_cost(training={"batch_size": b}).as_json()[key] for b in (4096, 16384)])
    steps = [{"stop": {"max_updates": u}} for u in (100, 10_000)] + [{"stop": {"max_epochs": 10**6}}]
    assert increasing([training_cost(training=t).work_total for t in steps])
    rows = [{**LMS5_DESCRIPTION, "sizes": {"train": n, "test": 10}} for n in (100, 10_000, 1_000_000)]
    assert increasing([training_cost(description=d).memory_bytes for d in rows])
    optimizers = [{"optimizer": "sgd"}, {"optimizer": "sgd", "momentum": 0.9}, {"optimizer": "adam"}]
    assert increasing([training_cost(training=t).memory_bytes for t in optimizers])
    attacked = {"adversarial": {"attack": {"eps": 0.3, "step_size": 0.05, "steps": 10}}}
    assert training_cost(training=attacked).work_total > training_cost().work_total


def test_audit_estimates_grow_with_steps_restarts_repeats_rows_and_members():
    assert increasing([audit_cost(options={"pgd": {"steps": s}}).work_total for s in (1, 20, 1000)])
    assert increasing([audit_cost(options={"pgd": {"restarts": r}}).work_total for r in (1, 10, 100)])
    assert increasing([audit_cost(repeats=r).work_total for r in (1, 10, 100)])
    assert increasing([audit_cost(members=m).work_total for m in (1, 4, 32)])
    assert increasing([audit_cost(members=m).memory_bytes for m in (1, 4, 32)])
    rows = [{**LMS5_DESCRIPTION, "sizes": {"train": 10, "test": n}} for n in (100, 10_000, 1_000_000)]
    for key in ("memory_bytes", "work"):
        assert increasing([audit_cost(description=d).as_json()[key] for d in rows])
    uap = [{"checks": ["uap"], "options": {"uap": {"epochs": e}}} for e in (1, 10)]
    assert increasing([audit_cost(**request).work_total for request in uap])
    fraction = [{"checks": ["feature_dependence"], "options": {"feature_dependence": {"sample_fraction": f}}}
                for f in (0.1, 1.0)]  # fmt: skip
    assert increasing([audit_cost(**request).work_total for request in fraction])


def test_preset_features_match_the_engine():
    from sbengine.data.presets import SYNTHETIC_PRESETS

    assert {name: sum(b.count for b in p.blocks) for name, p in SYNTHETIC_PRESETS.items()} == PRESET_FEATURES


def test_the_default_memory_limit_is_a_share_of_the_hosts_memory(clean_env, monkeypatch):
    assert Settings().max_job_memory_bytes == round(JOB_MEMORY_SHARE * host_memory_bytes())
    monkeypatch.setenv("SBAUDIT_MAX_JOB_MEMORY_BYTES", str(2 << 30))
    assert Settings().max_job_memory_bytes == 2 << 30


# --- the engine stays within the estimate -------------------------------------------------------------

# The child reads its own memory from /proc: resource.getrusage's ru_maxrss carries the parent's resident
# size across fork and exec (Linux), so it would report the test runner's size; VmHWM is this image's peak.
CHILD = textwrap.dedent(
    """
    import json, sys, tempfile
    import torch  # the job process has it imported (worker/local.py's fork server)
    from sbengine.data import build_dataset

    def status(key):
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(key + ":"))

    baseline = status("VmRSS")
    dataset = build_dataset(json.loads(sys.argv[1]))
    with tempfile.TemporaryDirectory() as directory:
        dataset.save(directory)
    print(json.dumps({"baseline": baseline, "peak": status("VmHWM")}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc (Linux)")
@pytest.mark.parametrize("rotate", [True, False])
def test_a_generated_dataset_stays_within_its_estimate(tmp_path, rotate):
    """A dataset of a few hundred MB (the float32 rows alone are 80 MB), generated in a fresh process:
    its peak resident memory over the process's own before generating stays within the estimate's data
    parts (the estimate less the job process's own share)."""
    request = {"blocks": [{"type": "linear"}, {"type": "slab", "k": 5, "count": 299},
                          {"type": "noise", "count": 200}],
               "n_train": 30_000, "n_val": 5_000, "n_test": 5_000, "rotate": rotate}  # fmt: skip
    estimate = estimates.dataset_estimate(DatasetCreate.model_validate(request))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(request)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    measured = json.loads(child.stdout)
    used = measured["peak"] - measured["baseline"]
    data_parts = estimate.memory_bytes - budget.RUNTIME_BYTES
    assert 40_000 * 500 * 4 < used <= data_parts, (used, data_parts)
