"""The ``sbaudit`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``; that function adds the parser and
sets ``handler`` (a callable taking the parsed args and returning an exit code). Heavy imports (torch, the
web stack) happen inside handlers so that ``sbaudit --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys

from worker import cli_client, cli_gc, cli_keys, cli_migrate, cli_reproduce, cli_serve, cli_worker
from worker.cli_common import CliError

COMMAND_MODULES = [cli_reproduce, cli_serve, cli_migrate, cli_keys, cli_worker, cli_client, cli_gc]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sbaudit",
        description="Audit neural networks for simplicity bias (Shah et al., NeurIPS 2020).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CliError as exc:
        print(f"sbaudit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sbaudit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
