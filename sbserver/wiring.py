"""What the server is wired with beyond its settings: the program that validates uploads.

The API never imports the engine; it runs this command once per upload in a resource-limited process
(service/uploads/validator.py). Naming the program here, by import rather than by a string in the service,
keeps the service -> engine arrow out of the service, where the import contracts would not see it.
"""

from __future__ import annotations

import sys


def upload_validator_program() -> list[str]:
    from sbengine import uploads  # a package with no imports of its own: no torch in the API process

    return [sys.executable, "-m", uploads.__name__]
