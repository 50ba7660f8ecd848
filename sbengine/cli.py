"""``sbaudit reproduce NAME``: rerun one of the paper's experiments and show our figures beside the paper's.

It lives with the engine because it only drives the engine (no server, no database). It plugs into the one
``sbaudit`` command through the ``sbaudit.commands`` entry-point group (pyproject.toml); rich is imported
only when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# Kept in step with sbengine.reproduce.EXPERIMENTS (a test checks) so that --help needs no torch import.
EXPERIMENT_NAMES = (
    "lms5",
    "ms57",
    "noisy-lms7",
    "ms7",
    "ensemble-lms5",
    "uap-lms5",
    "uap-ms57",
    "mnist-cifar",
    "mnist-cifar-ensemble",
    "mnist-cifar-adversarial",
)

ROWS = (
    ("updates", "updates", "{:.0f}"),
    ("train_accuracy", "train accuracy", "{:.4f}"),
    ("test_accuracy", "test accuracy", "{:.4f}"),
    ("auc", "AUC", "{:.3f}"),
    ("s_randomized_auc", "S-randomized AUC", "{:.3f}"),
    ("sc_randomized_auc", "S^c-randomized AUC", "{:.3f}"),
    ("s_randomized_accuracy", "S-randomized accuracy", "{:.3f}"),
    ("sc_randomized_accuracy", "S^c-randomized accuracy", "{:.3f}"),
    ("member_test_accuracy", "member test accuracy (mean)", "{:.4f}"),
    ("member_s_randomized_auc", "member S-randomized AUC (mean)", "{:.3f}"),
    ("robust_test_accuracy", "robust test accuracy", "{:.4f}"),
    ("pgd_accuracy", "accuracy under l2 PGD", "{:.4f}"),
    ("pgd_simple_share", "PGD share of l2 mass on S", "{:.4f}"),
    ("uap_accuracy", "accuracy under l2 UAP (SGD)", "{:.4f}"),
    ("uap_simple_share", "UAP share on S (SGD)", "{:.4f}"),
    ("svd_uap_accuracy", "accuracy under l2 UAP (SVD)", "{:.4f}"),
    ("svd_uap_simple_share", "UAP share on S (SVD)", "{:.4f}"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="rerun a paper experiment and compare with the paper",
        description="Generate the data, train the model and audit it exactly as the paper's notebook did "
        "(with a validation split, seeds and repeated randomizations), then print our figures beside "
        "the paper's.",
    )
    p.add_argument(
        "name", choices=EXPERIMENT_NAMES, metavar="NAME", help=f"one of: {', '.join(EXPERIMENT_NAMES)}"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed for data, init, shuffling (default 0)"
    )
    p.add_argument(
        "--n-train", type=_positive_int, default=None, help="training-set size (default: the paper's)"
    )
    p.add_argument("--eval-every", type=_positive_int, default=None, help="evaluate every N updates")
    p.add_argument("--epochs", type=_positive_int, default=None, help="cap training at N epochs")
    p.add_argument("--repeats", type=_positive_int, default=5, help="randomization repeats (default 5)")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available"
    )
    p.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sbengine.reproduce import EXPERIMENTS, run_experiment

    console = Console(stderr=True)
    try:
        with _progress_bar(console, EXPERIMENTS[args.name].title, quiet=False) as on_progress:
            result = run_experiment(
                args.name,
                seed=args.seed,
                n_train=args.n_train,
                eval_every=args.eval_every,
                epochs=args.epochs,
                repeats=args.repeats,
                device=args.device,
                progress=on_progress,
            )
    except (ValueError, FileNotFoundError) as exc:
        # The engine imports nothing of the CLI's, so it prints the CLI's one-line error itself.
        print(f"sbaudit: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0


class _progress_bar:
    """A rich progress bar fed by engine Progress events (bar on stderr, so --json output stays clean)."""

    def __init__(self, console, title: str, quiet: bool):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=quiet or not console.is_terminal,
        )
        self.title = title
        self.task = None
        self.last_accuracy = ""

    def __enter__(self):
        self.bar.__enter__()
        self.task = self.bar.add_task(self.title, total=None, status="")
        return self.update

    def update(self, p) -> None:
        if "train_accuracy" in p.metrics:
            self.last_accuracy = f" · train acc {p.metrics['train_accuracy']:.4f}"
        status = f"update {p.step:,}{self.last_accuracy}"
        self.bar.update(self.task, completed=p.step, total=p.total, status=status)

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    console.print(f"[bold]{result['title']}[/bold]")
    console.print(
        f"[dim]{result['source']} · seed {result['seed']} · {result['device']} · "
        f"{result['updates']:,} updates in {result['train_seconds']:.1f} s "
        f"({result.get('stopped_because', '')}) · "
        f"{result.get('repeats', 0)} randomization repeats[/dim]"
    )
    table = Table()
    table.add_column("metric")
    table.add_column("sbaudit", justify="right")
    table.add_column("paper", justify="right")
    paper = result["paper"]
    for key, label, fmt in ROWS:
        if key not in result and key not in paper:
            continue
        ours = result.get(key)
        ours_text = fmt.format(ours) if ours is not None else "—"
        if key in ("s_randomized_auc", "sc_randomized_auc") and key + "_std" in result:
            ours_text += f" ± {result[key + '_std']:.3f}"
        table.add_row(label, ours_text, fmt.format(paper[key]) if key in paper else "—")
    console.print(table)
    console.print(f"Verdict: {result['verdict']}")
