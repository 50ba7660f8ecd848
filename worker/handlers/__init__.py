"""One handler per job kind: thin wrappers that call sbengine and return files + resource fields.

Handlers are imported on first use, inside the job process, so torch is never imported by the API or by a
Celery worker's parent process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

HANDLERS = {
    "generate_dataset": "worker.handlers.dataset:generate_dataset",
    "train_model": "worker.handlers.train:train_model",
    "run_audit": "worker.handlers.audit:run_audit_job",
}


def get_handler(kind: str) -> Callable:
    if kind not in HANDLERS:
        raise ValueError(f"no handler for job kind {kind!r}")
    module_name, _, attr = HANDLERS[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)
