"""The upload validator program (check.py); one JSON request on stdin.

Run as ``python -m sbengine.uploads``, or by file as the server does (``python -I .../sbengine/uploads/
__main__.py``, where isolated mode puts neither the working directory nor ``PYTHONPATH`` on the import
path): then it imports the engine from the tree it lies in, not from whatever else is installed.
"""

import sys
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sbengine.uploads.check import main  # noqa: E402 - after the import path is known

sys.exit(main())
