"""Helpers for the upload tests: small checkpoints and datasets, hostile files, and the no-leftovers check."""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

FCN_SMALL = {"name": "fcn", "width": 20, "depth": 1}


def fcn_state(seed: int = 0, *, features: int = 50, classes: int = 2) -> dict[str, Any]:
    import torch

    from sbengine.models import build_model

    torch.manual_seed(seed)
    model = build_model(FCN_SMALL, input_shape=(features,), num_classes=classes)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def safetensors_bytes(state: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save(state)


def torch_bytes(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the file existing afterwards means code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def raw_pickle_bytes(path: Path) -> bytes:
    return pickle.dumps({"layers.0.weight": CreatesFile(path)}, protocol=2)


def upload(
    client, auth: dict[str, str], route: str, data: bytes, *, filename: str = "upload.bin", **fields: Any
):
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None}
    return client.post(
        route, headers=auth, data=form, files={"file": (filename, data, "application/octet-stream")}
    )


def upload_model(client, auth, data: bytes, *, filename: str = "model.safetensors", **fields: Any):
    fields.setdefault("architecture", FCN_SMALL)
    fields.setdefault("input_shape", [50])
    fields.setdefault("num_classes", "2")
    return upload(client, auth, "/v1/models/uploads", data, filename=filename, **fields)


def stored_files(settings) -> set[Path]:
    root = settings.artifacts_dir
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def assert_nothing_left(settings, artifacts_before: set[Path]) -> None:
    """After a refused upload: no upload directory, no temp file, no new artifact."""
    uploads = settings.uploads_dir
    leftovers = list(uploads.iterdir()) if uploads.exists() else []
    assert leftovers == [], f"left in {uploads}: {leftovers}"
    assert stored_files(settings) == artifacts_before


@functools.cache
def validator_user_env() -> dict[str, str]:
    """``SBAUDIT_UPLOAD_VALIDATOR_USER`` for tests that run the real validator program. Started by root, it
    runs as ``nobody``, who must be able to execute this interpreter; where it cannot (a pyenv under a 0700
    /root, as on the development VM), those tests keep root's uid ("") and the uid and network steps are
    tested with a probe on an interpreter nobody can run (tests/security/test_validator_sandbox.py)."""
    if os.geteuid() != 0:
        return {}
    try:
        subprocess.run(
            [sys.executable, "-I", "-c", "import encodings"],
            user="nobody",
            extra_groups=[],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return {"SBAUDIT_UPLOAD_VALIDATOR_USER": ""}
    return {}
