"""The API process never imports torch or the engine (fast start, small memory): checked in a fresh
interpreter, through app creation and a request that touches every layer."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_api_process_does_not_import_torch(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from service import migrate
        from service.app import create_app
        from service.auth import create_key
        from service.db import Database
        from service.settings import Settings

        settings = Settings(data_dir={str(tmp_path)!r})
        migrate.upgrade(settings.database_url)
        db = Database.connect(settings.database_url)
        key, _ = create_key(db, owner="x")
        with TestClient(create_app(settings, db=db)) as client:
            r = client.post("/v1/datasets", json={{"preset": "LMS-5"}},
                            headers={{"Authorization": "Bearer " + key}})
            assert r.status_code == 202, r.text
            assert client.get("/metrics").status_code == 200
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("torch", "sbengine", "numpy", "torchvision"))
        print(",".join(heavy))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the API imported: {out.stdout.strip()[:300]}"


def test_worker_parents_do_not_import_torch(tmp_path):
    """The local executor's server process and a Celery worker's parent fork or spawn job processes;
    CUDA must only ever be initialised inside a job, so these modules stay free of torch."""
    code = (
        "import sys\n"
        "import sbclient.cli.entry, sbserver.commands.serve, sbserver.asgi, sbserver.wiring\n"
        "import worker.local, worker.celery_app, worker.runner, worker.handlers\n"
        "from service.settings import Settings\n"
        "sbclient.cli.entry.build_parser()\n"
        "sbserver.wiring.upload_validator_program()\n"
        f"worker.celery_app.make_celery(Settings(data_dir={str(tmp_path)!r}, broker_url='redis://127.0.0.1:1/0'))\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sbengine'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # The CLI lists `reproduce` (sbengine/cli.py, torch only when it runs) and naming the upload validator
    # program imports its (empty) package; nothing else of the engine.
    assert set(filter(None, out.stdout.strip().split(","))) <= {
        "sbengine",
        "sbengine.cli",
        "sbengine.uploads",
    }
