"""``sbaudit models upload`` / ``sbaudit datasets upload``: send a checkpoint or a dataset to a server.

POST /v1/models/uploads and POST /v1/datasets/uploads through sbclient (the file is streamed from disk).
sbclient/cli/resources.py adds these actions to its ``models`` and ``datasets`` groups. Prints the created (or
already existing) resource as JSON on stdout, a one-line summary on stderr; a refusal is one line:
``sbaudit: error: 422 body.file: the weights do not match ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbclient.cli.connect import (
    Subparsers,
    add_connection_options,
    client_command,
    int_list,
    json_option,
)
from sbclient.cli.errors import CliError

if TYPE_CHECKING:
    from sbclient import Client, Upload


def _common_options(parser: argparse.ArgumentParser) -> None:
    add_connection_options(parser)
    parser.add_argument("--name", help="a label for the new resource")


def add_model_upload(actions: Subparsers) -> None:
    upload = actions.add_parser(
        "upload",
        help="upload a checkpoint (safetensors or a torch.save'd state_dict) or an ONNX graph",
        description="Upload a checkpoint: safetensors, or a state_dict saved with torch.save (zip format, "
        "loaded on the server with weights_only=True), with --architecture; the server checks every tensor "
        "against the architecture and runs a zero batch through the model. Or upload an ONNX graph (.onnx, "
        "any framework) without --architecture: the server checks it and compares its torch form with "
        "onnxruntime.",
    )
    upload.add_argument("file", type=Path, help="the checkpoint file")
    upload.add_argument(
        "--architecture",
        help='JSON as in POST /v1/models, e.g. \'{"name": "fcn", "width": 100, "depth": 2}\' or '
        '\'{"name": "torchvision", "model": "resnet18"}\' (or @file.json); omit it for an .onnx file',
    )
    upload.add_argument("--input-shape", help="e.g. 50 or 3,32,32 (default: the dataset's)")
    upload.add_argument("--num-classes", type=int, help="number of classes (default: the dataset's)")
    upload.add_argument(
        "--normalization", help='JSON {"mean": [...], "std": [...]} applied to inputs before the network'
    )
    upload.add_argument("--dataset-id", help="the dataset audits of this model use by default")
    _common_options(upload)
    upload.set_defaults(handler=run_model_upload)


def add_dataset_upload(actions: Subparsers) -> None:
    upload = actions.add_parser(
        "upload",
        help="upload evaluation data (arrays, a table or an image archive) with declared feature blocks",
        description="Upload evaluation data with its named feature blocks: arrays (x and y, optionally "
        "split: 0/1/2 per row, or x_train/y_train, x_val/y_val, x_test/y_test, as .npz or safetensors), a "
        "table (CSV or Parquet with a --label column; blocks name columns), or images in a zip or tar "
        "archive "
        "([train|val|test/]<class>/<name>.png|jpg|jpeg|webp; --masks for per-example regions).",
    )
    upload.add_argument("file", type=Path, help="the .npz, safetensors, CSV, Parquet, zip or tar file")
    upload.add_argument(
        "--blocks",
        help='JSON list, e.g. \'[{"name": "top", "rows": [0, 16]}, {"name": "bottom", "rows": [16, 32]}]\', '
        '\'[{"name": "first", "indices": [0]}, ...]\', \'[{"name": "site", "columns": ["hospital_id"]}]\' '
        'or \'[{"name": "background", "mask": "complement"}]\' (or @file.json)',
    )
    upload.add_argument(
        "--block",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="one block, repeatable, after --blocks: SPEC 'region' or 'complement' (of the masks), or a "
        "table's column names separated by commas (site=hospital_id)",
    )
    upload.add_argument("--simple-blocks", help="JSON list of the block indices forming S (default: [0])")
    upload.add_argument("--num-classes", type=int, help="number of classes (default: largest label + 1)")
    upload.add_argument("--label", help="a table's label column")
    upload.add_argument("--split-column", help="a table's column of train/val/test (default: all test)")
    upload.add_argument(
        "--categorical",
        action="append",
        metavar="COLUMN",
        help="a table's column to one-hot encode (repeatable)",
    )
    upload.add_argument(
        "--image-size", help="H,W every image is resized to (default: the first image's size)"
    )
    upload.add_argument(
        "--masks", type=Path, help="a zip or tar of masks (<the image's path>.png, non-zero = region)"
    )
    _common_options(upload)
    upload.set_defaults(handler=run_dataset_upload)


def block_option(text: str) -> dict[str, Any]:
    """``--block NAME=SPEC``: a mask side or a table's columns."""
    name, sep, spec = text.partition("=")
    if not sep or not name.strip() or not spec.strip():
        raise CliError(f"--block {text!r}: give NAME=region, NAME=complement or NAME=column[,column...]")
    spec = spec.strip()
    if spec in ("region", "complement"):
        return {"name": name.strip(), "mask": spec}
    return {"name": name.strip(), "columns": [c.strip() for c in spec.split(",")]}


def _report(kind: str, upload: Upload[Any]) -> int:
    body = upload.resource
    verb = "uploaded" if upload.created else "already uploaded (same file and declaration):"
    print(f"{verb} {kind} {body['id']} ({body['status']})", file=sys.stderr)
    print(json.dumps(body, indent=2))
    return 0


@client_command
def run_model_upload(args: argparse.Namespace, client: Client) -> int:
    upload = client.upload_model(
        args.file,
        architecture=json_option(args.architecture, "--architecture"),
        input_shape=int_list(args.input_shape, "--input-shape"),
        num_classes=args.num_classes,
        normalization=json_option(args.normalization, "--normalization"),
        dataset_id=args.dataset_id,
        name=args.name,
    )
    return _report("model", upload)


@client_command
def run_dataset_upload(args: argparse.Namespace, client: Client) -> int:
    blocks = [*(json_option(args.blocks, "--blocks") or []), *(block_option(b) for b in args.block)]
    if not blocks:
        raise CliError("declare the feature blocks: --blocks JSON and/or --block NAME=SPEC")
    upload = client.upload_dataset(
        args.file,
        blocks=blocks,
        simple_blocks=json_option(args.simple_blocks, "--simple-blocks"),
        num_classes=args.num_classes,
        name=args.name,
        label=args.label,
        split_column=args.split_column,
        categorical=args.categorical,
        image_size=int_list(args.image_size, "--image-size"),
        masks=args.masks,
    )
    return _report("dataset", upload)
