"""The local executor's process handling: the fork server survives a process-group SIGTERM and preloads what
jobs import, a server that is shutting down starts no more jobs, and the API hears when a job ends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from service_testing import queue_job

from worker.local import LocalExecutor, _Running


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


def test_job_processes_start_with_what_jobs_import_already_loaded(tmp_path):
    """A job process forked from the executor's fork server finds torch, the optimizer machinery that the
    first optimizer pulls in (torch._dynamo, sympy), sbengine, matplotlib and the handlers in sys.modules:
    it imports none of them itself, and it does not run the server's main script again (``sbaudit``'s
    imports the client). Checked in a fresh interpreter running a script, whose fork server is its own."""
    probe = textwrap.dedent(
        """
        import json, sys
        names = ("torch", "torch._dynamo", "sympy", "sbengine.train", "sbengine.audit", "matplotlib.pyplot",
                 "safetensors.torch", "worker.handlers.train", "worker.handlers.audit")
        loaded = {name: name in sys.modules for name in names}
        open(out, "w").write(json.dumps(loaded))
        """
    )
    script = tmp_path / "server_main.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, pathlib, sys
            # Every run of this script, in whichever process, leaves a line.
            with open(pathlib.Path(__file__).with_suffix(".runs"), "a") as runs:
                runs.write(__name__ + "\\n")

            if __name__ == "__main__":
                from service.settings import Settings
                from worker.local import LocalExecutor

                executor = LocalExecutor(Settings(data_dir=sys.argv[1]), db=None)
                executor._start_fork_server()
                process = executor._mp.Process(target=exec, args=(sys.argv[2], {"out": sys.argv[3]}))
                process.start()
                process.join()
                imported = "torch" in sys.modules
                print(json.dumps({"exitcode": process.exitcode, "probe_imported_torch": imported}))
            """
        )
    )
    out = tmp_path / "loaded.json"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data"), probe, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"exitcode": 0, "probe_imported_torch": False}
    loaded = json.loads(out.read_text())
    assert loaded == dict.fromkeys(loaded, True), f"not preloaded: {[n for n, v in loaded.items() if not v]}"
    assert script.with_suffix(".runs").read_text().split() == ["__main__"], "a job ran the main script"


class _Ended:
    """A job process that has exited."""

    def __init__(self, exitcode: int) -> None:
        self.exitcode = exitcode

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        pass


def test_the_api_is_told_when_a_job_process_ends(db, settings):
    """Whatever way it ended (recorded its result, or died and its lease is expired), the executor tells the
    API, which wakes the requests waiting for that job (service/job_ends.py)."""
    ended: list[str] = []
    executor = LocalExecutor(settings, db, on_job_end=ended.append)
    finished, died = queue_job(db), queue_job(db)
    executor._running[finished] = _Running(_Ended(0), "w1")
    executor._running[died] = _Running(_Ended(-9), "w2")
    executor._collect_finished()
    assert sorted(ended) == sorted([finished, died])
    assert executor._running == {}
