"""Logging for the server, job processes and Celery workers: one format, to stderr."""

from __future__ import annotations

import logging

# Chatty at INFO about their own set-up; their warnings still show.
_QUIET = ("alembic", "multipart", "celery.utils.functional")


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if level.lower() != "debug":
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
