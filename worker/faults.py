"""A fault-injection hook for tests: pause a job at a named point so a test can kill its process there, or
cancel a job stuck there.

Inert unless ``SBAUDIT_FAULT_PAUSE`` is set (never set it in production). Its value is
``<point>:<seconds>[,<point>:<seconds>...]``; the runner calls :func:`pause` at these points:

- ``handler``: the job holds its lease and is about to run its handler; paused here it is a handler stuck
  in one long call, reaching no progress point;
- ``before_artifacts``: the handler finished, nothing stored yet;
- ``mid_artifacts``: the output files are in the artifact store, their rows not yet committed;
- ``after_artifacts``: the rows are about to be committed together with the job's final state.

At a listed point the job writes the marker file ``<data dir>/fault-markers/<point>-<job id>`` (so the test
knows the job is there) and sleeps. It pauses once per job and point: a marker that already exists means
an earlier attempt paused here, and the re-queued attempt runs straight through.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("sbaudit.worker")

ENV_VAR = "SBAUDIT_FAULT_PAUSE"
POINTS = frozenset({"handler", "before_artifacts", "mid_artifacts", "after_artifacts"})


def configured_pauses(value: str | None = None) -> dict[str, float]:
    """``"mid_artifacts:30"`` -> ``{"mid_artifacts": 30.0}``; unknown points are an error, not a no-op."""
    value = os.environ.get(ENV_VAR, "") if value is None else value
    pauses = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        point, _, seconds = item.partition(":")
        if point not in POINTS:
            raise ValueError(f"{ENV_VAR}: unknown point {point!r} (known: {', '.join(sorted(POINTS))})")
        pauses[point] = float(seconds or 0)
    return pauses


def marker_path(data_dir: Path, point: str, job_id: str) -> Path:
    return Path(data_dir) / "fault-markers" / f"{point}-{job_id}"


def pause(point: str, *, job_id: str, data_dir: Path) -> None:
    seconds = configured_pauses().get(point)
    if seconds is None:
        return
    marker = marker_path(data_dir, point, job_id)
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n")
    log.warning("job %s: fault injection, pausing %.1fs at %s", job_id, seconds, point)
    time.sleep(seconds)
