"""An audit's MLflow run: the finished audit, logged to the tracking server SBAUDIT_MLFLOW_TRACKING_URI.

The run is logged by the audit's own job, once its files are stored and just before its result is recorded
(the runner's ``Publisher``), so the run id is recorded with the results in one transaction and a client that
waited for the audit sees it. It holds:

- parameters: the audit (checks, options, S, split, repeats, seed, ensemble), the model (id, name,
  architecture, training, seed) and the dataset (id, name, its generation spec), and the environment;
- metrics: every measurement of every check's results under its dotted path (``randomization.auc``,
  ``randomization.s_randomized_auc.mean``, ``feature_dependence.random.block 0_ linear.accuracy``); counts
  and settings (integers) and lists of numbers (per-repeat values, histograms, boundaries) are left out:
  they are in ``results.json`` and the figures;
- tags: ``verdict`` (the code, e.g. ``mostly_s``), ``verdict_label`` (``simplicity_biased``, ...),
  ``verdict_text``, ``audit_id`` and ``audit_url`` (the report on this server);
- artifacts: ``report.html`` (the service's own report, rendered from the same stored data),
  ``results.json`` and ``figures/<name>.png``.

MLflow is never a reason for an audit to fail: whatever goes wrong (mlflow not installed, no tracking URI on
this worker, the server unreachable or refusing) is logged and recorded as ``mlflow.error`` on the audit, and
a run left half-logged is deleted. A run whose audit is then not recorded (canceled meanwhile) is deleted too.

mlflow is imported here, inside the job, and only for audits that are logged: it costs a second or two.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.models import Audit, Dataset, Model
from service.schemas.common import ArtifactRead
from worker.runner import JobContext

log = logging.getLogger("sbaudit.worker")

# MLflow's limits (mlflow.utils.validation): longer keys and values are cut.
MAX_KEY_CHARS = 250
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 8000
MAX_ERROR_CHARS = 500
# Names MLflow accepts in metric and parameter keys on every platform; anything else becomes "_".
_KEY_UNSAFE = re.compile(r"[^\w.\- ]")
# An entry of a list of objects that carries one of these string fields is keyed by it ("block 0: linear").
_NAME_FIELDS = ("name", "group")
# The client retries an unreachable server for minutes by default; an audit waits for it, so fewer and
# shorter (an operator's own MLFLOW_HTTP_REQUEST_* variables win).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


class MlflowUnavailable(Exception):
    """This worker cannot log to MLflow at all (not installed, no tracking URI)."""


@dataclass
class AuditRun:
    """The runner's Publisher for an audit that asked for MLflow: ``target`` is where the run goes
    (``{"experiment", "run_name"}``, resolved by the API), ``fields`` the audit's result as the handler
    returns it (verdict, verdict_code, results, sections, params)."""

    ctx: JobContext
    target: dict[str, str]
    fields: dict[str, Any]
    run_id: str | None = None

    def publish(self, artifacts: list[ArtifactRead]) -> dict[str, Any]:
        outcome: dict[str, Any] = dict(self.target)
        self.ctx.report("mlflow", 0, 1)
        try:
            outcome.update(self._log(artifacts))
        except Exception as exc:
            error = " ".join(str(exc).split())[:MAX_ERROR_CHARS] or type(exc).__name__
            log.warning("job %s: the audit's MLflow run was not logged: %s", self.ctx.job_id, error)
            outcome["error"] = error
        return {"params": {**self.fields["params"], "mlflow": outcome}}

    def retract(self) -> None:
        if self.run_id is None:
            return
        try:
            _client(self.ctx).delete_run(self.run_id)
            log.info("job %s: deleted MLflow run %s", self.ctx.job_id, self.run_id)
        except Exception:
            log.warning("job %s: could not delete MLflow run %s", self.ctx.job_id, self.run_id, exc_info=True)

    def _log(self, artifacts: list[ArtifactRead]) -> dict[str, Any]:
        client = _client(self.ctx)  # first: it says why when mlflow is missing
        from mlflow.entities import Metric, Param

        experiment_id = _experiment_id(client, self.target["experiment"])
        params, tags = self._params_and_tags()
        run = client.create_run(experiment_id, run_name=self.target["run_name"], tags=tags)
        self.run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            client.log_batch(
                self.run_id,
                metrics=[Metric(k, v, now, 0) for k, v in metrics(self.fields["results"]).items()],
                params=[Param(k, v) for k, v in params.items()],
            )
            folder = self.ctx.scratch / "mlflow"
            self._write_artifacts(folder, artifacts)
            client.log_artifacts(self.run_id, str(folder))
            client.set_terminated(self.run_id, "FINISHED")
        except Exception:
            self.retract()  # nothing half-logged stays behind
            self.run_id = None
            raise
        uri = self.ctx.settings.mlflow_tracking_uri or ""
        return {
            "run_id": run.info.run_id,
            "experiment_id": experiment_id,
            "run_url": run_url(uri, experiment_id, run.info.run_id),
        }

    def _params_and_tags(self) -> tuple[dict[str, str], dict[str, str]]:
        from service.reports.content import VERDICT_LABELS

        ctx, fields = self.ctx, self.fields
        audit_params = {k: v for k, v in fields["params"].items() if k != "mlflow"}
        with ctx.db.read_session() as session:
            audit = session.get(Audit, ctx.resource_id)
            model = session.get(Model, audit.model_id) if audit else None
            dataset = session.get(Dataset, audit.dataset_id) if audit else None
            described: dict[str, Any] = {
                "audit": {"id": ctx.resource_id, "name": audit.name if audit else None, **audit_params},
                "model": _row_params(model, ("name", "architecture", "training", "seed", "source")),
                "dataset": _row_params(dataset, ("name", "spec")),
            }
        params = {key: _param_text(value) for key, value in leaves(described) if value is not None}
        code = fields.get("verdict_code") or ""
        tags = {
            "verdict": code,
            "verdict_label": VERDICT_LABELS.get(code, "inconclusive"),
            "verdict_text": (fields.get("verdict") or "")[:MAX_TAG_CHARS],
            "audit_id": ctx.resource_id,
            "audit_url": f"{ctx.settings.base_url}/v1/audits/{ctx.resource_id}/report",
        }
        return params, tags

    def _write_artifacts(self, folder: Path, artifacts: list[ArtifactRead]) -> None:
        """``report.html``, ``results.json`` and ``figures/*.png`` under ``folder``, from the store."""
        figures = folder / "figures"
        figures.mkdir(parents=True)
        for artifact in artifacts:
            source = self.ctx.store.path_for(artifact.sha256)
            if artifact.content_type == "image/png":
                shutil.copyfile(source, figures / f"{artifact.kind}.png")
            elif artifact.kind == "results":
                shutil.copyfile(source, folder / "results.json")
        (folder / "report.html").write_text(self._report_html(artifacts), encoding="utf-8")

    def _report_html(self, artifacts: list[ArtifactRead]) -> str:
        """The HTML report the API will serve for this audit, rendered by the service's own code from a
        detached copy of the audit row with the result filled in (it is not recorded yet)."""
        from service.app import API_VERSION
        from service.reports.content import assemble, page_context
        from service.reports.render import render

        ctx = self.ctx
        with ctx.db.read_session() as session:
            audit = session.get(Audit, ctx.resource_id)
            if audit is None:
                raise LookupError(f"audit {ctx.resource_id} no longer exists")
            session.expunge(audit)
            for key, value in {**self.fields, "status": "ready"}.items():
                setattr(audit, key, value)
            report = assemble(
                session,
                ctx.store,
                audit,
                base_url=ctx.settings.base_url,
                api_version=API_VERSION,
                embed=True,
                audit_artifacts=artifacts,
            )
            return render("report.html.j2", **page_context(report))


def _client(ctx: JobContext) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MlflowUnavailable(
            "mlflow is not installed on the worker (pip install 'sbaudit[mlflow]')"
        ) from exc
    uri = ctx.settings.mlflow_tracking_uri
    if not uri:
        raise MlflowUnavailable("the worker has no MLflow tracking server (SBAUDIT_MLFLOW_TRACKING_URI)")
    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str) -> str:
    """The experiment's id, created if it does not exist (another job may create it at the same time)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name))
        except MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise MlflowUnavailable(f"the MLflow experiment {name!r} is deleted; restore it or name another")
    return str(experiment.experiment_id)


def _row_params(row: Model | Dataset | None, columns: tuple[str, ...]) -> dict[str, Any]:
    if row is None:
        return {}
    return {"id": row.id, **{c: getattr(row, c, None) for c in columns}}


def leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every entry below ``value`` that is not an object. A list of objects that
    name themselves (a ``name`` or ``group`` field) is read as an object keyed by those names; any other
    list is one leaf. Keys are cut down to what MLflow accepts."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and (field := _naming_field(value)):
        for item in value:
            yield from leaves({k: v for k, v in item.items() if k != field}, f"{prefix}.{item[field]}")
    else:
        yield _KEY_UNSAFE.sub("_", prefix)[:MAX_KEY_CHARS], value


def _naming_field(items: list[Any]) -> str | None:
    for field in _NAME_FIELDS:
        names = [item.get(field) if isinstance(item, dict) else None for item in items]
        if all(isinstance(name, str) for name in names) and len(set(names)) == len(names):
            return field
    return None


def metrics(results: dict[str, Any] | None) -> dict[str, float]:
    """The measurements in the checks' results, by dotted path: every float, and findings (booleans) as 0/1.
    Integers are counts and settings (``n``, ``seed``, ``steps``, ``coordinates``), and lists of numbers
    are plotted, not read: both are left out (they are in results.json)."""
    return {
        key: float(value) for key, value in leaves(results or {}) if isinstance(value, bool | float) and key
    }


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 1] + "…"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, for an HTTP tracking server (credentials in the URI left out)."""
    from urllib.parse import urlsplit

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    base = f"{parts.scheme}://{host}{parts.path}".rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
