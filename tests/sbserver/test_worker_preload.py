"""`sbaudit worker` preloads what jobs import into its main process before the pool starts, so that each
pool child, forked from it for one job, starts with torch and the engine loaded (SBAUDIT_PRELOAD_JOB_MODULES,
on by default); switched off, the main process stays torch-free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Celery's worker_main is replaced by a probe: it reports what the main process has loaded at the moment
# the worker would start its pool, and returns (no broker is contacted).
SCRIPT = textwrap.dedent(
    """
    import argparse, json, sys
    from celery import Celery
    from service import migrate
    from service.settings import Settings

    def worker_main(self, argv=None):
        names = ("torch", "torch._dynamo", "sbengine.train", "matplotlib.pyplot", "worker.handlers.train")
        print(json.dumps({name: name in sys.modules for name in names}))

    Celery.worker_main = worker_main
    migrate.upgrade(Settings().database_url)
    from sbserver.commands import worker
    worker.run(argparse.Namespace())
    """
)


@pytest.mark.parametrize("preload", [True, False])
def test_the_worker_main_process_is_warm_before_its_pool_starts(tmp_path, clean_env, preload):
    env = {
        **os.environ,
        "SBAUDIT_DATA_DIR": str(tmp_path / "data"),
        "SBAUDIT_BROKER_URL": "redis://127.0.0.1:6379/0",
        "SBAUDIT_PRELOAD_JOB_MODULES": str(preload).lower(),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == dict.fromkeys(loaded, preload)
