"""What the client subcommands share: the connection options, JSON options, and sbclient errors turned
into the CLI's one-line errors (``sbaudit: error: 422 body.n_train: ...``, exit status 2).

Imports nothing heavy at module level: ``sbaudit --help`` loads this module; httpx and sbclient are
imported when a command runs.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbclient.cli.errors import CliError

if TYPE_CHECKING:
    from sbclient import Client

DEFAULT_URL = "http://127.0.0.1:8000"
# What `add_subparsers()` returns: each command module's register() adds its parsers to it. The class is
# generic only in the type stubs: Python 3.11 cannot subscript it at run time.
if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"server URL (default: $SBAUDIT_URL or {DEFAULT_URL})")
    parser.add_argument("--key", help="API key (default: $SBAUDIT_API_KEY)")


def connection_parent() -> argparse.ArgumentParser:
    """--url, --key and --json, shared by every client action."""
    parent = argparse.ArgumentParser(add_help=False)
    add_connection_options(parent)
    parent.add_argument("--json", action="store_true", help="print the resource as JSON (for scripts)")
    return parent


def json_option(value: str | None, option: str) -> Any:
    """The option's JSON value (``@path`` reads it from a file); None when the option was not given."""
    if value is None:
        return None
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as exc:
            raise CliError(f"{option}: cannot read {value[1:]}: {exc.strerror}") from None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise CliError(f"{option}: not valid JSON: {exc}") from None


def int_list(value: str | None, option: str) -> list[int] | None:
    """``0`` / ``0,2`` / ``[0, 2]`` -> a list of integers."""
    if value is None:
        return None
    text = value.strip().strip("[]")
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"{option}: expected integers separated by commas, not {value!r}") from None


def open_client(args: argparse.Namespace) -> Client:
    from sbclient import Client

    client = Client(url=args.url, api_key=args.key)
    if not client.api_key:
        client.close()
        raise CliError("no API key: pass --key or set SBAUDIT_API_KEY")
    return client


def client_command(
    handler: Callable[[argparse.Namespace, Client], int],
) -> Callable[[argparse.Namespace], int]:
    """Run ``handler(args, client)`` with a client for ``--url``/``--key``; every sbclient error becomes
    a one-line CliError."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from sbclient import ClientError

        try:
            with open_client(args) as client:
                return handler(args, client)
        except ClientError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:  # a local file: the upload to read, the download's folder
            raise CliError(f"{exc.filename or 'file'}: {exc.strerror or exc}") from None

    return run
