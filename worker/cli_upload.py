"""``sbaudit models upload`` / ``sbaudit datasets upload``: send a checkpoint or a dataset to a server.

A thin HTTP client (httpx, file streamed from disk) for POST /v1/models/uploads and POST /v1/datasets/uploads.
The server is ``--url`` or ``SBAUDIT_URL`` (default http://127.0.0.1:8000), the key ``--key`` or
``SBAUDIT_API_KEY``. Prints the created (or already existing) resource as JSON on stdout, a one-line
summary on stderr; a refusal is one line: ``sbaudit: error: 422 body.file: the weights do not match ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from worker.cli_common import CliError

DEFAULT_URL = "http://127.0.0.1:8000"
# The server validates within the request (a fresh process importing torch): allow it time.
READ_TIMEOUT_SECONDS = 900.0


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"server URL (default: $SBAUDIT_URL or {DEFAULT_URL})")
    parser.add_argument("--key", help="API key (default: $SBAUDIT_API_KEY)")
    parser.add_argument("--name", help="a label for the new resource")


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="upload a model checkpoint to a server")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_sub.required = True
    upload = models_sub.add_parser(
        "upload",
        help="upload a checkpoint (safetensors or a torch.save'd state_dict)",
        description="Upload a checkpoint: safetensors, or a state_dict saved with torch.save (zip format, "
        "loaded on the server with weights_only=True). The server checks every tensor against the "
        "architecture and runs a zero batch through the model.",
    )
    upload.add_argument("file", type=Path, help="the checkpoint file")
    upload.add_argument(
        "--architecture",
        required=True,
        help='JSON as in POST /v1/models, e.g. \'{"name": "fcn", "width": 100, "depth": 2}\' (or @file.json)',
    )
    upload.add_argument("--input-shape", help="e.g. 50 or 3,32,32 (default: the dataset's)")
    upload.add_argument("--num-classes", type=int, help="number of classes (default: the dataset's)")
    upload.add_argument(
        "--normalization", help='JSON {"mean": [...], "std": [...]} applied to inputs before the network'
    )
    upload.add_argument("--dataset-id", help="the dataset audits of this model use by default")
    _connection_options(upload)
    upload.set_defaults(handler=run_model_upload)

    datasets = subparsers.add_parser("datasets", help="upload an evaluation dataset to a server")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", metavar="ACTION")
    datasets_sub.required = True
    upload = datasets_sub.add_parser(
        "upload",
        help="upload arrays (.npz or safetensors) with declared feature blocks",
        description="Upload evaluation data: x and y (optionally split: 0/1/2 per row), or x_train/y_train, "
        "x_val/y_val, x_test/y_test, as .npz or safetensors, plus the named feature blocks.",
    )
    upload.add_argument("file", type=Path, help="the .npz or safetensors file")
    upload.add_argument(
        "--blocks",
        required=True,
        help='JSON list, e.g. \'[{"name": "top", "rows": [0, 16]}, {"name": "bottom", "rows": [16, 32]}]\' '
        'or \'[{"name": "first", "indices": [0]}, ...]\' (or @file.json)',
    )
    upload.add_argument("--simple-blocks", help="JSON list of the block indices forming S (default: [0])")
    upload.add_argument("--num-classes", type=int, help="number of classes (default: largest label + 1)")
    _connection_options(upload)
    upload.set_defaults(handler=run_dataset_upload)


def _json_argument(value: str | None, option: str) -> str | None:
    """The option's JSON text (``@path`` reads it from a file), checked to parse."""
    if value is None:
        return None
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as exc:
            raise CliError(f"{option}: cannot read {value[1:]}: {exc.strerror}") from None
    try:
        json.loads(value)
    except ValueError as exc:
        raise CliError(f"{option}: not valid JSON: {exc}") from None
    return value


def _problem_line(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} {response.text.strip()[:300]}"
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"{response.status_code} {' '.join(str(detail or body).split())[:1000]}"


def _post(path: str, args: argparse.Namespace, fields: dict[str, Any]) -> dict[str, Any]:
    import httpx

    url = (args.url or os.environ.get("SBAUDIT_URL") or DEFAULT_URL).rstrip("/")
    key = args.key or os.environ.get("SBAUDIT_API_KEY")
    if not key:
        raise CliError("no API key: pass --key or set SBAUDIT_API_KEY")
    if not args.file.is_file():
        raise CliError(f"{args.file}: no such file")
    data = {k: str(v) for k, v in fields.items() if v is not None}
    if args.name:
        data["name"] = args.name
    timeout = httpx.Timeout(30.0, read=READ_TIMEOUT_SECONDS, write=READ_TIMEOUT_SECONDS)
    try:
        with open(args.file, "rb") as fh, httpx.Client(timeout=timeout) as client:
            response = client.post(
                url + path,
                headers={"Authorization": f"Bearer {key}"},
                data=data,
                files={"file": (args.file.name, fh, "application/octet-stream")},
            )
    except httpx.HTTPError as exc:
        raise CliError(
            f"upload to {url} failed: {type(exc).__name__}: {exc} (is the server running? a file over the "
            "server's SBAUDIT_MAX_UPLOAD_BYTES may also end the connection early)"
        ) from None
    if response.status_code not in (200, 201):
        raise CliError(_problem_line(response))
    return {"status": response.status_code, "body": response.json()}


def _report(kind: str, result: dict[str, Any]) -> int:
    body = result["body"]
    verb = "uploaded" if result["status"] == 201 else "already uploaded (same file and declaration):"
    print(f"{verb} {kind} {body['id']} ({body['status']})", file=sys.stderr)
    print(json.dumps(body, indent=2))
    return 0


def run_model_upload(args: argparse.Namespace) -> int:
    fields = {
        "architecture": _json_argument(args.architecture, "--architecture"),
        "input_shape": args.input_shape,
        "num_classes": args.num_classes,
        "normalization": _json_argument(args.normalization, "--normalization"),
        "dataset_id": args.dataset_id,
    }
    return _report("model", _post("/v1/models/uploads", args, fields))


def run_dataset_upload(args: argparse.Namespace) -> int:
    fields = {
        "blocks": _json_argument(args.blocks, "--blocks"),
        "simple_blocks": _json_argument(args.simple_blocks, "--simple-blocks"),
        "num_classes": args.num_classes,
    }
    return _report("dataset", _post("/v1/datasets/uploads", args, fields))
