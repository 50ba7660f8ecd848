"""The local executor's process handling: the fork server survives a process-group SIGTERM, and a server
that is shutting down starts no more jobs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from service_testing import queue_job

from worker.local import LocalExecutor


def test_a_draining_executor_starts_no_more_jobs(db, settings, monkeypatch):
    executor = LocalExecutor(settings, db)
    started: list[str] = []
    monkeypatch.setattr(executor, "_spawn", started.append)
    first = queue_job(db)
    executor._tick()
    assert started == [first]

    executor = LocalExecutor(settings, db)
    monkeypatch.setattr(executor, "_spawn", started.append)
    executor.drain()
    queue_job(db)
    executor._tick()
    assert started == [first], "a job was started after drain()"


def test_the_fork_server_ignores_sigterm_and_the_server_keeps_its_handler(tmp_path):
    """`docker stop` signals the whole process group: the fork server must outlive it to report how the
    jobs it forked ended. Checked in a fresh interpreter, whose main thread starts the fork server."""
    script = textwrap.dedent(
        """
        import json, multiprocessing.forkserver, signal, sys
        from service.settings import Settings
        from worker.local import LocalExecutor

        def handler(*_):
            pass

        signal.signal(signal.SIGTERM, handler)
        LocalExecutor(Settings(data_dir=sys.argv[1]), db=None)._start_fork_server()
        pid = multiprocessing.forkserver._forkserver._forkserver_pid
        status = open(f"/proc/{pid}/status").read()
        ignored = int(next(l.split()[1] for l in status.splitlines() if l.startswith("SigIgn:")), 16)
        print(json.dumps({"fork_server_ignores_sigterm": bool(ignored >> (signal.SIGTERM - 1) & 1),
                          "handler_restored": signal.getsignal(signal.SIGTERM) is handler}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "fork_server_ignores_sigterm": True,
        "handler_restored": True,
    }
