"""The ``sbaudit`` command line: one entry point for the client commands and the server's.

The client commands (datasets, models, audits, jobs, artifacts) live beside the client they drive and need
only the client install (httpx, rich). The server's commands (serve, worker, migrate, keys, gc) and the
engine's (reproduce) live with what they start; they plug in through the ``sbaudit.commands`` entry-point
group declared in pyproject.toml, so this package never imports them and a client-only install still
lists them and says which install they need.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``handler`` (a callable
taking the parsed args and returning an exit code). Heavy imports happen inside handlers, so
``sbaudit --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from sbclient.cli import resources
from sbclient.cli.connect import Subparsers
from sbclient.cli.errors import CliError

PLUGIN_GROUP = "sbaudit.commands"
SERVER_INSTALL = "pip install 'sbaudit[server]'"
OUR_PACKAGES = ("sbclient", "sbengine", "sbserver", "service", "worker")


def _plugins() -> list[EntryPoint]:
    return sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def _needs_server_install(name: str, missing: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise CliError(
            f"'sbaudit {name}' needs the server install ({missing} is not installed): {SERVER_INSTALL}"
        )

    return handler


def _register_plugin(sub: Subparsers, plugin: EntryPoint) -> None:
    try:
        register = plugin.load()
    except ImportError as exc:
        missing = (exc.name or "a server library").split(".")[0]
        parser = sub.add_parser(
            plugin.name, help=f"(needs the server install: {SERVER_INSTALL})", add_help=False
        )
        parser.add_argument("rest", nargs=argparse.REMAINDER)
        parser.set_defaults(handler=_needs_server_install(plugin.name, missing))
        return
    register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sbaudit",
        description="Audit neural networks for simplicity bias (Shah et al., NeurIPS 2020).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    resources.register(sub)
    for plugin in _plugins():
        _register_plugin(sub, plugin)
    return parser


def _missing_library(exc: ModuleNotFoundError) -> str | None:
    """The third-party module a server command could not import (a client-only install), else None."""
    top = (exc.name or "").split(".")[0]
    return top if top and top not in OUR_PACKAGES else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CliError as exc:
        print(f"sbaudit: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        missing = _missing_library(exc)
        if missing is None or args.command in resources.COMMANDS:
            raise
        print(
            f"sbaudit: error: 'sbaudit {args.command}' needs the server install "
            f"({missing} is not installed): {SERVER_INSTALL}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("sbaudit: interrupted", file=sys.stderr)
        return 130
