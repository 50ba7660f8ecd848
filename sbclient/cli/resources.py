"""The client side of ``sbaudit``: ``datasets``, ``models``, ``audits``, ``jobs`` and ``artifacts`` against a
running server (``--url`` / ``$SBAUDIT_URL``, ``--key`` / ``$SBAUDIT_API_KEY``), all through sbclient.

Results go to stdout (a readable summary, or the resource's JSON with ``--json``), progress to stderr.
``--wait`` on a create command follows the job with a progress bar and exits 1 unless it succeeded. A
refusal is one line, ``sbaudit: error: 422 body.n_train: ...`` (exit status 2). ``audits run --wait`` and
``audits show`` take gates (sbclient.cli.gates): exit status 3 when one trips.

It is over 400 lines because it holds one parser and one handler per client command, in the order of
``sbaudit --help``; what they share lives in connect.py, upload.py, watch.py, gates.py and render.py.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbclient.cli import gates as cli_gates
from sbclient.cli import upload as cli_upload
from sbclient.cli.connect import Subparsers, client_command, connection_parent, int_list, json_option
from sbclient.cli.errors import CliError

if TYPE_CHECKING:
    from sbclient import Client

LIST_LIMIT = 20
COMMANDS = ("datasets", "models", "audits", "jobs", "artifacts")


def register(subparsers: Subparsers) -> None:
    common = connection_parent()
    _register_datasets(subparsers, common)
    _register_models(subparsers, common)
    _register_audits(subparsers, common)
    _register_jobs(subparsers, common)
    artifacts = _group(subparsers, "artifacts", "download artifacts (weights, arrays, plots)")
    get = artifacts.add_parser("get", parents=[common], help="download an artifact")
    get.add_argument("artifact_id")
    get.add_argument("-o", "--output", type=str, default=Path("."),
                     help="file or folder to save to (default: the server's file name, here)")  # fmt: skip
    get.set_defaults(handler=get_artifact)


def _group(subparsers: Subparsers, name: str, help: str) -> Subparsers:
    parser = subparsers.add_parser(name, help=help)
    actions: Subparsers = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    actions.required = True
    return actions


def _wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="follow the job with a progress bar until it ends"
    )
    parser.add_argument("--body", help="JSON (or @file) request body; the options above override its fields")
    parser.add_argument("--name", help="a label for the new resource")


def _show_and_list(
    actions: Subparsers,
    common: argparse.ArgumentParser,
    kind: str,
    show: Callable[[argparse.Namespace], int],
    list_: Callable[[argparse.Namespace], int],
    filters: dict[str, str],
) -> argparse.ArgumentParser:
    """Add the ``show`` and ``list`` actions; returns the ``show`` parser."""
    show_parser = actions.add_parser("show", parents=[common], help=f"show one {kind}")
    show_parser.add_argument("id")
    show_parser.set_defaults(handler=show)
    list_parser = actions.add_parser("list", parents=[common], help=f"list {kind}s, newest first")
    list_parser.add_argument(
        "--limit", type=int, default=LIST_LIMIT, help=f"at most this many (default {LIST_LIMIT})"
    )
    for option, help in filters.items():
        list_parser.add_argument(option, help=help)
    list_parser.set_defaults(handler=list_)
    return show_parser


def _register_datasets(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "datasets", "generate, upload and inspect datasets")
    create = actions.add_parser(
        "create",
        parents=[common],
        help="generate a dataset from a preset or a block composition",
        description="Generate a dataset: --preset LMS-5 (MS-(5,7), noisy-LMS-7, MNIST-CIFAR, ...) or "
        '--blocks \'[{"type": "linear"}, {"type": "slab", "k": 5, "count": 49}]\'. '
        "Sizes default to the preset's.",
    )
    source = create.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset name, e.g. LMS-5")
    source.add_argument("--blocks", help="JSON list of blocks (or @file), as in POST /v1/datasets")
    create.add_argument("--n-train", type=int)
    create.add_argument("--n-val", type=int)
    create.add_argument("--n-test", type=int)
    create.add_argument("--seed", type=int)
    create.add_argument("--rotate", action=argparse.BooleanOptionalAction, default=None,
                        help="apply a random rotation (default: on)")  # fmt: skip
    create.add_argument("--simple-blocks", help="block indices forming S, e.g. 0 or 0,2")
    _wait_option(create)
    create.set_defaults(handler=create_dataset)
    cli_upload.add_dataset_upload(actions)
    _show_and_list(
        actions, common, "dataset", show_dataset, list_datasets, {"--status": "ready, failed, ..."}
    )


def _register_models(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "models", "train, upload and inspect models")
    train = actions.add_parser("train", parents=[common], help="train a model on a dataset")
    train.add_argument("--dataset-id", help="the dataset to train on")
    train.add_argument(
        "--architecture",
        help='JSON (or @file), e.g. \'{"name": "fcn", "width": 100, "depth": 2}\', or just a name',
    )
    train.add_argument("--training", help="JSON (or @file): optimizer, lr, batch_size, stop, ...")
    train.add_argument("--seed", type=int)
    train.add_argument("--ensemble-size", type=int, help="members trained independently")
    train.add_argument("--adversarial", help="JSON: PGD adversarial training, e.g. '{\"attack\": {...}}'")
    _wait_option(train)
    train.set_defaults(handler=train_model)
    cli_upload.add_model_upload(actions)
    _show_and_list(actions, common, "model", show_model, list_models,
                   {"--status": "ready, failed, ...", "--dataset-id": "trained on this dataset"})  # fmt: skip


def _register_audits(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "audits", "audit models and read the results")
    run = actions.add_parser("run", parents=[common], help="audit a model (or an ensemble of models)")
    run.add_argument("--model-id")
    run.add_argument("--model-ids", help="comma-separated: audit the ensemble of these models")
    run.add_argument("--dataset-id", help="default: the dataset the model was trained on")
    run.add_argument("--checks", help="comma-separated: randomization, feature_dependence, generalization, "
                     "pgd, uap, ensemble (default: randomization)")  # fmt: skip
    run.add_argument(
        "--simple-blocks", help="block indices forming S, e.g. 0 or 0,2 (default: the dataset's)"
    )
    run.add_argument("--options", help='JSON (or @file) options per check, e.g. \'{"pgd": {"eps": 0.25}}\'')
    run.add_argument(
        "--verdict-thresholds",
        metavar="JSON",
        help="JSON (or @file) thresholds of the verdict, e.g. '{\"chance_margin\": 0.05}'",
    )
    run.add_argument("--split", help="test (default), val or train")
    run.add_argument("--repeats", type=int, help="permutations averaged per figure")
    run.add_argument("--seed", type=int)
    run.add_argument("--combine", help="how an ensemble combines its members: logits (default) or probs")
    _wait_option(run)
    cli_gates.add_options(run)
    run.set_defaults(handler=run_audit)
    show = _show_and_list(
        actions,
        common,
        "audit",
        show_audit,
        list_audits,
        {"--status": "ready, failed, ...", "--model-id": "audits of this model"},
    )
    cli_gates.add_options(show)
    report = actions.add_parser("report", parents=[common], help="save an audit's HTML report")
    report.add_argument("id")
    report.add_argument("-o", "--output", type=Path, help="the file to write (default: <id>.html)")
    report.set_defaults(handler=save_report)
    diff = actions.add_parser(
        "diff", parents=[common], help="compare finished audits figure by figure",
        description="Every figure of every check side by side, with its delta from the first audit (the "
        "baseline), and the verdicts. --json prints GET /v1/audits/compare's document.",
    )  # fmt: skip
    diff.add_argument("ids", nargs="+", metavar="ID", help="two or more audit ids; the first is the baseline")
    diff.add_argument("--changed", action="store_true", help="show only the figures that differ")
    diff.set_defaults(handler=diff_audits)
    export = actions.add_parser(
        "export", parents=[common], help="save an audit's results as CSV or its report as one HTML file"
    )
    export.add_argument("id")
    export.add_argument(
        "--format",
        choices=("csv", "html"),
        default="csv",
        help="csv: one row per check, figure, block and statistic; html: the report (default: csv)",
    )
    export.add_argument(
        "-o",
        "--output",
        type=str,  # not Path, which drops the trailing '/' of a folder to create (out/)
        default=Path("."),
        help="file or folder (out/: created) to save to (default: <id>-results.csv or <id>-report.html)",
    )
    export.set_defaults(handler=export_audit)


def _register_jobs(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "jobs", "follow, list and cancel jobs")
    watch = actions.add_parser(
        "watch",
        parents=[common],
        help="follow a job with a progress bar until it ends",
        description="Exit status 0 when the job succeeded, 1 when it failed or was canceled.",
    )
    watch.add_argument("id")
    watch.set_defaults(handler=watch_job)
    cancel = actions.add_parser(
        "cancel",
        parents=[common],
        help="cancel a job",
        description="The jobs waiting for its result fail, naming it; --cascade cancels them instead.",
    )
    cancel.add_argument("id")
    cancel.add_argument(
        "--cascade", action="store_true", help="also cancel the jobs waiting for this one, down the chain"
    )
    cancel.set_defaults(handler=cancel_job)
    _show_and_list(actions, common, "job", show_job, list_jobs,
                   {"--state": "waiting, queued, running, succeeded, ...", "--kind": "e.g. train_model",
                    "--resource-id": "the job of this dataset, model or audit"})  # fmt: skip


# --- request bodies -----------------------------------------------------------------------------------


def _body(args: argparse.Namespace, fields: dict[str, Any]) -> dict[str, Any]:
    """``--body`` with the given options laid over it (options not given are left out)."""
    body = json_option(args.body, "--body") or {}
    if not isinstance(body, dict):
        raise CliError("--body: must be a JSON object")
    body.update({k: v for k, v in fields.items() if v is not None})
    if args.name is not None:
        body["name"] = args.name
    return body


def _architecture(value: str | None) -> Any:
    if value is not None and not value.lstrip().startswith(("{", "@")):
        return {"name": value.strip()}
    return json_option(value, "--architecture")


def _names(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value is not None else None


# --- handlers -------------------------------------------------------------------------------------------


@client_command
def create_dataset(args: argparse.Namespace, client: Client) -> int:
    body = _body(args, {
        "preset": args.preset, "blocks": json_option(args.blocks, "--blocks"), "n_train": args.n_train,
        "n_val": args.n_val, "n_test": args.n_test, "seed": args.seed, "rotate": args.rotate,
        "simple_blocks": int_list(args.simple_blocks, "--simple-blocks"),
    })  # fmt: skip
    return _created(args, client, "dataset", client.create_dataset(body))


@client_command
def train_model(args: argparse.Namespace, client: Client) -> int:
    training = json_option(args.training, "--training")
    adversarial = json_option(args.adversarial, "--adversarial")
    if adversarial is not None:
        training = {**(training or {}), "adversarial": adversarial}
    body = _body(args, {
        "dataset_id": args.dataset_id, "architecture": _architecture(args.architecture), "training": training,
        "seed": args.seed, "ensemble_size": args.ensemble_size,
    })  # fmt: skip
    return _created(args, client, "model", client.train_model(body))


@client_command
def run_audit(args: argparse.Namespace, client: Client) -> int:
    gates = cli_gates.from_args(args)
    if gates and not args.wait:
        raise CliError(
            "--fail-on / --fail-if need --wait (or gate a finished audit: sbaudit audits show ID ...)"
        )
    body = _body(args, {
        "model_id": args.model_id, "model_ids": _names(args.model_ids), "dataset_id": args.dataset_id,
        "checks": _names(args.checks), "simple_blocks": int_list(args.simple_blocks, "--simple-blocks"),
        "options": json_option(args.options, "--options"), "split": args.split, "repeats": args.repeats,
        "seed": args.seed, "combine": args.combine,
        "verdict_thresholds": json_option(args.verdict_thresholds, "--verdict-thresholds"),
    })  # fmt: skip
    if isinstance(body.get("checks"), list):
        gates.require_checks(body["checks"])
    return _created(args, client, "audit", client.run_audit(body), gates)


def _created(
    args: argparse.Namespace,
    client: Client,
    kind: str,
    created: Mapping[str, Any],
    gates: cli_gates.Gates | None = None,
) -> int:
    """Report a queued resource; with --wait, follow its job, show the finished resource and, for an audit
    that succeeded, judge its gates."""
    from sbclient.cli import render as cli_render
    from sbclient.cli.watch import watch_job

    out = cli_render.console()
    if not args.wait:
        if args.json:
            cli_render.print_json(created)
        else:
            out.print(f"{kind} {created['id']} {created['status']} (job {created['job_id']}); "
                      f"follow it with: sbaudit jobs watch {created['job_id']}")  # fmt: skip
        return 0
    job = watch_job(client, created["job_id"], cli_render.console(stderr=True))
    getter = {"dataset": client.get_dataset, "model": client.get_model, "audit": client.get_audit}[kind]
    resource = getter(created["id"])
    _show(args, kind, resource, client)
    if job["state"] != "succeeded":
        return 1
    return gates.judge(resource) if gates else 0


def _show(args: argparse.Namespace, kind: str, resource: Any, client: Client) -> None:
    from sbclient.cli import render as cli_render

    if args.json:
        cli_render.print_json(resource)
        return
    out = cli_render.console()
    view = {
        "dataset": cli_render.dataset_view,
        "model": cli_render.model_view,
        "audit": cli_render.audit_view,
        "job": cli_render.job_view,
    }[kind]
    out.print(view(resource))
    if kind == "audit" and resource.get("status") == "ready":
        out.print(f"report: {client.report_url(resource['id'])}")


def _list(args: argparse.Namespace, kind: str, items: Iterable[Mapping[str, Any]]) -> int:
    from sbclient.cli import render as cli_render

    if args.limit < 1:
        raise CliError("--limit: must be at least 1")
    shown = list(itertools.islice(items, args.limit))
    if args.json:
        cli_render.print_json(shown)
    else:
        cli_render.console().print(cli_render.list_view(kind, shown))
    return 0


@client_command
def show_dataset(args: argparse.Namespace, client: Client) -> int:
    _show(args, "dataset", client.get_dataset(args.id), client)
    return 0


@client_command
def list_datasets(args: argparse.Namespace, client: Client) -> int:
    return _list(args, "datasets", client.list_datasets(status=args.status))


@client_command
def show_model(args: argparse.Namespace, client: Client) -> int:
    _show(args, "model", client.get_model(args.id), client)
    return 0


@client_command
def list_models(args: argparse.Namespace, client: Client) -> int:
    return _list(args, "models", client.list_models(status=args.status, dataset_id=args.dataset_id))


@client_command
def show_audit(args: argparse.Namespace, client: Client) -> int:
    gates = cli_gates.from_args(args)
    audit = client.get_audit(args.id)
    _show(args, "audit", audit, client)
    if not gates:
        return 0
    status = audit.get("status")
    if status in ("failed", "canceled"):
        print(f"gates not judged: audit {audit['id']} is {status}", file=sys.stderr)
        return 1
    if status != "ready":
        raise CliError(f"audit {audit['id']} is {status}: gates need a finished audit "
                       f"(wait for it with: sbaudit jobs watch {audit.get('job_id')})")  # fmt: skip
    return gates.judge(audit)


@client_command
def list_audits(args: argparse.Namespace, client: Client) -> int:
    return _list(args, "audits", client.list_audits(status=args.status, model_id=args.model_id))


@client_command
def save_report(args: argparse.Namespace, client: Client) -> int:
    path = client.export_audit(args.id, args.output or Path(f"{args.id}.html"), format="html")
    print(path)
    print(client.report_url(args.id))
    return 0


@client_command
def export_audit(args: argparse.Namespace, client: Client) -> int:
    print(client.export_audit(args.id, args.output, format=args.format))
    return 0


@client_command
def diff_audits(args: argparse.Namespace, client: Client) -> int:
    from sbclient.cli import render as cli_render

    comparison = client.compare_audits(args.ids)
    if args.json:
        cli_render.print_json(comparison)
        return 0
    out = cli_render.console()
    out.print(cli_render.comparison_view(comparison, changed_only=args.changed))
    out.print(f"report: {client.comparison_url(args.ids)}")
    return 0


@client_command
def show_job(args: argparse.Namespace, client: Client) -> int:
    _show(args, "job", client.get_job(args.id), client)
    return 0


@client_command
def list_jobs(args: argparse.Namespace, client: Client) -> int:
    return _list(
        args, "jobs", client.list_jobs(state=args.state, kind=args.kind, resource_id=args.resource_id)
    )


@client_command
def watch_job(args: argparse.Namespace, client: Client) -> int:
    from sbclient.cli import render as cli_render
    from sbclient.cli.watch import watch_job as follow

    job = follow(client, args.id, cli_render.console(stderr=True))
    if args.json:
        cli_render.print_json(job)
    return 0 if job["state"] == "succeeded" else 1


@client_command
def cancel_job(args: argparse.Namespace, client: Client) -> int:
    job = client.cancel_job(args.id, cascade=args.cascade)
    _show(args, "job", job, client)
    return 0


@client_command
def get_artifact(args: argparse.Namespace, client: Client) -> int:
    path = client.download_artifact(args.artifact_id, args.output)
    print(path)
    return 0
