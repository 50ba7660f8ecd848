"""``python -m sbengine.uploads``: validate one uploaded checkpoint, ONNX graph or dataset, or measure the
cost of an architecture to be trained (architecture_cost.py), in a process of its own.

Started by the API (service/uploads/validator.py, wired to this program by sbserver) with a JSON request on
stdin; answers one JSON line on stdout: ``{"ok": true, "format": ..., ...}`` or
``{"ok": false, "status": 422, "detail": ..., "field": ..., "extra": {}}``. Before importing torch or numpy
it caps its own address space, CPU time and the size of files it writes, so a hostile file can at worst
make it fail. Nothing in the file is executed: its framing (formats.py) is checked before any library
reads it, then checkpoints.py, onnx_check.py or datasets.py reads it.
"""

from __future__ import annotations

import json
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

from sbengine.uploads.architecture_cost import measure_architecture
from sbengine.uploads.checkpoints import check_checkpoint
from sbengine.uploads.datasets import check_dataset
from sbengine.uploads.formats import Rejected, check_framing
from sbengine.uploads.messages import one_line
from sbengine.uploads.onnx_check import check_onnx


def _limit(limits: dict[str, int]) -> None:
    for name, value in (
        (resource.RLIMIT_AS, limits.get("memory_bytes")),
        (resource.RLIMIT_CPU, limits.get("cpu_seconds")),
        (resource.RLIMIT_FSIZE, limits.get("file_bytes")),
        (resource.RLIMIT_CORE, 0),
    ):
        if value is None:
            continue
        _, hard = resource.getrlimit(name)
        soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(name, (soft, hard))


def _unavailable(exc: BaseException) -> dict[str, Any]:
    """The validator itself cannot run (a server problem, not the client's file)."""
    traceback.print_exc(file=sys.stderr)
    return {
        "ok": False,
        "status": 503,
        "field": "body.file",
        "detail": "the upload validator cannot start on this server (see its log; is "
        f"SBAUDIT_UPLOAD_CHECK_MEMORY_BYTES large enough?): {type(exc).__name__}",
    }


def handle(request: dict[str, Any]) -> dict[str, Any]:
    try:  # the libraries first: failing to load them is the server's problem, not the file's
        import numpy  # noqa: F401

        if request["kind"] in ("checkpoint", "onnx", "architecture"):
            import safetensors.torch  # noqa: F401
            import torch  # noqa: F401

            import sbengine.models  # noqa: F401
        if request["kind"] == "onnx":
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
    except (ImportError, OSError, MemoryError) as exc:
        return _unavailable(exc)
    try:
        kind = request["kind"]
        if kind not in ("checkpoint", "dataset", "onnx", "architecture"):
            raise ValueError(f"unknown request kind {kind!r}")
        if kind == "architecture":  # no file: the network a training request names, at its dataset's shape
            return {"ok": True, **measure_architecture(request)}
        if kind == "onnx":
            return {"ok": True, "format": "onnx", **check_onnx(request)}
        framing = check_framing(Path(request["path"]), kind=kind, max_total_bytes=request["max_bytes"])
        if kind == "checkpoint":
            request = {**request, "format": "safetensors" if framing == "safetensors" else "pytorch"}
            return {"ok": True, "format": request["format"], **check_checkpoint(request)}
        request = {**request, "format": framing}
        checked = check_dataset(request)
        return {"ok": True, "format": checked.pop("format", framing), **checked}
    except Rejected as exc:
        return {"ok": False, **exc.as_dict()}
    except ImportError as exc:  # Pillow or pyarrow (tables, images) missing: the server's problem
        return _unavailable(exc)
    except MemoryError:
        return {
            "ok": False,
            "status": 422,
            "field": "body.file",
            "detail": "validating the file needs more memory than this server allows "
            "(SBAUDIT_UPLOAD_CHECK_MEMORY_BYTES)",
        }
    except Exception as exc:  # a reader choking on malformed content: the client's file, not our bug
        traceback.print_exc(file=sys.stderr)
        return {
            "ok": False,
            "status": 422,
            "field": "body.file",
            "detail": f"unreadable file: {one_line(exc)}",
        }


def main() -> int:
    request = json.loads(sys.stdin.read())
    _limit(request.get("limits") or {})
    answer = handle(request)
    sys.stdout.write(json.dumps(answer, allow_nan=False) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
