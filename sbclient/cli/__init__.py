"""The ``sbaudit`` command (``sbclient.cli.entry:main``) and its client commands; see main.py."""

from sbclient.cli.entry import main

__all__ = ["main"]
