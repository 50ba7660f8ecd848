"""What the server is wired with beyond its settings: the program that validates uploads.

The API never imports the engine; it runs this command once per upload in a sandboxed, resource-limited
process (service/uploads/validator.py, service/uploads/sandbox.py). Naming the program here, by import
rather than by a string in the service, keeps the service -> engine arrow out of the service, where the
import contracts would not see it.
"""

from __future__ import annotations

import sys
from pathlib import Path


def upload_validator_program() -> list[str]:
    """``python -I <engine>/uploads/__main__.py``: isolated mode (no ``PYTHON*`` variables, no user site, not
    the working directory on the import path), run by file so that it imports the engine from the copy this
    server named, whether installed (the Docker image), installed in editable mode or a plain source tree."""
    from sbengine import uploads  # a package with no imports of its own: no torch in the API process

    return [sys.executable, "-I", str(Path(uploads.__file__).resolve().with_name("__main__.py"))]
