"""What every job imports, loaded once by the process that job processes fork from.

Importing this module warms the process that imports it: the local executor's fork server names it as its
preload (worker/local.py) and a Celery worker's main process imports it before it forks its pool children
(worker/celery_app.py), so a job process starts with all of this already in memory instead of spending
seconds of CPU on it per job. It is never imported by the API process (that one must stay torch-free) and
has no use elsewhere.

What it loads is what a dataset, training or audit job would import on its own (about 2,600 modules, 3.5 s
of CPU on a 2-core machine for all of them; a job needed 1-2 s of CPU for its part):

- torch, safetensors, sbengine's data, models, training, ensembles, checks, audit and plots, and the
  handlers and their inputs (worker/handlers, worker/inputs);
- the optimizer machinery: constructing the first optimizer imports ``torch._dynamo`` and what it needs
  (sympy among it, ~900 modules, ~1 s), so one of each optimizer the engine offers is built on a
  one-element parameter;
- matplotlib on the Agg backend, with one tiny figure rendered so that its fonts are loaded too.

None of it touches CUDA (no ``torch.cuda`` call at all: initialising it here would break it in every forked
job, which initialises its own) or starts a thread of ours. The only other thread is OpenBLAS's pool, which
numpy's import starts and which stops itself around a fork (``pthread_atfork``); torch's OpenMP pool does
not exist yet (the one-element tensors involve no parallel region), so each job starts its own. Then the
heap is frozen (``gc.freeze()``), so that the collector in a job does not touch, and copy, the pages the
jobs share.

In the fork server it also stops the jobs from running the API process's main script again (see
FORK_SERVER_MAIN_ENV in worker/local.py).

A failure to warm up is logged and swallowed: a cold job process still works (it imports what it needs),
while an exception here would take the fork server down with it and no job would start.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

log = logging.getLogger("sbaudit.executor")

# Modules whose import is the warm-up (each imports a good part of torch or sbengine).
MODULES = (
    "torch",
    "torch.nn",
    "torch.optim",
    "safetensors.torch",
    "sbengine.audit",
    "sbengine.checks",
    "sbengine.data",
    "sbengine.device",
    "sbengine.ensemble",
    "sbengine.evaluation",
    "sbengine.models",
    "sbengine.plots",
    "sbengine.train",
    "worker.runner",
    "worker.inputs",
    "worker.handlers.dataset",
    "worker.handlers.train",
    "worker.handlers.audit",
)


def warm_up() -> None:
    import importlib

    for name in MODULES:
        importlib.import_module(name)
    _build_optimizers()
    _render_a_figure()


def _build_optimizers() -> None:
    import torch

    parameter = torch.nn.Parameter(torch.zeros(1))
    for optimizer in (torch.optim.SGD, torch.optim.Adam, torch.optim.RMSprop):
        optimizer([parameter], lr=0.1)


def _render_a_figure() -> None:
    from sbengine.plots import new_figure, to_png

    plt, fig, ax = new_figure(1.0, 1.0)
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set_title("warm-up")
    ax.legend()
    to_png(plt, fig)


def _adopt_main_path() -> None:
    """In the fork server: take the API process's main script path as this process's ``__main__`` path, so
    that the jobs forked from here do not run that script again (worker/local.py, FORK_SERVER_MAIN_ENV)."""
    path = os.environ.pop("_SBAUDIT_FORK_SERVER_MAIN_PATH", None)
    main = sys.modules.get("__main__")
    if path and main is not None and getattr(main, "__file__", None) is None:
        main.__file__ = path


_adopt_main_path()
try:
    warm_up()
except Exception:
    log.warning("job process warm-up failed; jobs will import what they need themselves", exc_info=True)
gc.freeze()
