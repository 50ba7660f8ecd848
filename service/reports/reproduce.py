"""How to rerun an audit from nothing: the exact request bodies, as curl and as ``sbaudit`` commands.

The bodies are the ones the server stored (defaults filled in), so replaying them with the same seeds gives
the same dataset, the same weights (on the same device and versions) and the same audit. New ids are
assigned on replay, so the commands carry them in shell variables ($DATASET_ID, $MODEL_ID).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from service.models import Audit, Dataset, Model
from service.views import ENSEMBLE_SIZE_KEY, ensemble_size_of

AUDIT_BODY_KEYS = ("checks", "options", "verdict_thresholds", "simple_blocks", "split", "repeats", "seed",
                   "combine")  # fmt: skip
AUTH = '-H "Authorization: Bearer $SBAUDIT_API_KEY"'


def compact(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=False)


def dataset_body(dataset: Dataset | None) -> dict[str, Any] | None:
    """The POST /v1/datasets body, or None for an upload (its files are the only way to get it back)."""
    if dataset is None or "upload" in (dataset.spec or {}):
        return None
    return dict(dataset.spec or {})


def model_body(model: Model | None) -> dict[str, Any] | None:
    """The POST /v1/models body, or None for an uploaded checkpoint."""
    if model is None or model.source != "train":
        return None
    body: dict[str, Any] = {
        "dataset_id": "$DATASET_ID",
        "architecture": model.architecture,
        "training": {k: v for k, v in (model.training or {}).items() if k != ENSEMBLE_SIZE_KEY},
        "seed": model.seed,
    }
    if ensemble_size_of(model) != 1:
        body["ensemble_size"] = ensemble_size_of(model)
    if model.name:
        body["name"] = model.name
    return body


def audit_body(audit: Audit) -> dict[str, Any]:
    params = audit.params or {}
    body: dict[str, Any] = {}
    if params.get("model_ids"):
        body["model_ids"] = list(params["model_ids"])
    else:
        body["model_id"] = "$MODEL_ID"
    body["dataset_id"] = "$DATASET_ID"
    body.update({k: params[k] for k in AUDIT_BODY_KEYS if params.get(k) is not None})
    if audit.name:
        body["name"] = audit.name
    return body


def _json_arg(body: dict[str, Any]) -> str:
    """The body as one shell word, quoted, in which $DATASET_ID and $MODEL_ID still expand."""
    text = compact(body)
    if "'" not in text:  # the common case, and the readable one: '{"model_id":"'"$MODEL_ID"'",...}'
        return "'" + re.sub(r'"(\$DATASET_ID|\$MODEL_ID)"', '"\'"\\1"\'"', text) + "'"
    pieces = re.split(r'"(\$DATASET_ID|\$MODEL_ID)"', text)
    # re.split keeps the variables at odd positions: quote the literal JSON around them.
    return "".join(
        f"'\"'\"{p}\"'\"'" if i % 2 else shlex.quote(p) for i, p in enumerate(pieces) if p or i % 2
    )


def curl_post(path: str, body: dict[str, Any], variable: str) -> str:
    return (
        f'RESPONSE=$(curl -sS -X POST "$SBAUDIT_URL{path}" {AUTH} \\\n'
        f"  -H 'Content-Type: application/json' -d {_json_arg(body)})\n"
        f'{variable}=$(echo "$RESPONSE" | jq -r .id)\n'
        f'# repeat until it says "succeeded":\n'
        f'curl -sS "$SBAUDIT_URL/v1/jobs/$(echo "$RESPONSE" | jq -r .job_id)?wait=60" {AUTH} | jq -r .state'
    )


def commands(*, base_url: str, dataset: Dataset | None, model: Model | None, audit: Audit) -> dict[str, Any]:
    """``{"dataset", "model", "audit"}`` bodies and the ``curl`` / ``cli`` command lists that replay them."""
    ds, md, au = dataset_body(dataset), model_body(model), audit_body(audit)
    setup = f"export SBAUDIT_URL={shlex.quote(base_url)}\nexport SBAUDIT_API_KEY=sbk_...  # your key"
    curl, cli, notes = [setup], [setup], []
    if ds is not None:
        curl.append(curl_post("/v1/datasets", ds, "DATASET_ID"))
        cli.append(
            f"DATASET_ID=$(sbaudit datasets create --body {shlex.quote(compact(ds))} --wait --json "
            "| jq -r .id)"
        )
    else:
        notes.append(
            "The dataset was uploaded: upload the same files again (sbaudit datasets upload) "
            "and set DATASET_ID to the new id."
        )
    if md is not None:
        curl.append(curl_post("/v1/models", md, "MODEL_ID"))
        flags = [
            '--dataset-id "$DATASET_ID"',
            f"--architecture {shlex.quote(compact(md['architecture']))}",
            f"--training {shlex.quote(compact(md['training']))}",
            f"--seed {md['seed']}",
        ]
        if "ensemble_size" in md:
            flags.append(f"--ensemble-size {md['ensemble_size']}")
        cli.append("MODEL_ID=$(sbaudit models train " + " \\\n  ".join(flags) + " --wait --json | jq -r .id)")
    elif "model_ids" not in au:
        notes.append(
            "The model was uploaded: upload the same checkpoint again (sbaudit models upload) "
            "and set MODEL_ID to the new id."
        )
    if "model_ids" in au:
        notes.append(
            "This audit ran on an ensemble of separately trained models; train or upload each "
            "and put their new ids in model_ids."
        )
    curl.append(curl_post("/v1/audits", au, "AUDIT_ID"))
    cli.append("sbaudit audits run " + " \\\n  ".join(_audit_flags(au)) + " --wait")
    return {"dataset": ds, "model": md, "audit": au, "curl": curl, "cli": cli, "notes": notes}


def _audit_flags(body: dict[str, Any]) -> list[str]:
    flags = (
        [f"--model-ids {','.join(body['model_ids'])}"] if "model_ids" in body else ['--model-id "$MODEL_ID"']
    )
    flags += ['--dataset-id "$DATASET_ID"', f"--checks {','.join(body.get('checks', []))}"]
    if body.get("simple_blocks"):
        flags.append(f"--simple-blocks {','.join(str(b) for b in body['simple_blocks'])}")
    if body.get("options"):
        flags.append(f"--options {shlex.quote(compact(body['options']))}")
    if body.get("verdict_thresholds"):
        flags.append(f"--verdict-thresholds {shlex.quote(compact(body['verdict_thresholds']))}")
    for key in ("split", "repeats", "seed", "combine"):
        if key in body:
            flags.append(f"--{key} {shlex.quote(str(body[key]))}")
    return flags
