"""What the API says about an upload it refuses, before or after the validator looked at it.

The API process parses nothing of an uploaded file (the validator program does, in its own process); it
only checks the client's file name, which it shows back but never uses for a path.
"""

from __future__ import annotations

import unicodedata
from typing import Any

MAX_FILENAME_CHARS = 255


class Rejected(Exception):
    """A client error found in an upload: HTTP ``status``, a one-line ``detail``, the ``field`` at fault, and
    any extra members for the problem body (e.g. ``missing`` / ``unexpected`` tensor names)."""

    def __init__(self, detail: str, *, status: int = 422, field: str = "body.file", **extra: Any) -> None:
        super().__init__(detail)
        self.detail, self.status, self.field, self.extra = detail, status, field, extra


def check_filename(name: str | None) -> None:
    """Refuse a name that tries to be a path (``../x``, ``/etc/passwd``, ``C:\\x``) or hides control
    characters, although it is only ever shown back."""
    if name is None or name == "":
        return
    bad = (
        len(name) > MAX_FILENAME_CHARS
        or name in (".", "..")
        or any(c in name for c in "/\\")
        or (len(name) > 1 and name[1] == ":")
        or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name)
    )
    if bad:
        raise Rejected(
            f"the file name {name[:80]!r} is not a plain file name (no directories, drive letters or control "
            "characters)"
        )
