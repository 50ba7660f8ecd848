"""Putting an image archive and its mask archive together, client-side, for one upload.

The server reads masks from inside the image archive (``masks/<the image's path>.png``: one file, one
validation, one upload route). Users often keep masks apart, so ``sbaudit datasets upload photos.zip --masks
masks.zip`` writes a temporary zip holding both: every image member as it is, every mask member under
``masks/``. Both inputs may be zip or tar; only regular files are copied (the server refuses the rest
anyway), and the member names are kept as they are: the server checks them.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from sbclient.errors import ClientError

MASK_FOLDER = "masks/"


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for entry in archive.infolist():
                if not entry.is_dir():
                    yield entry.filename, archive.read(entry)
        return
    try:
        with tarfile.open(path, "r:*") as archive:
            for info in archive:
                if info.isfile():
                    fh = archive.extractfile(info)
                    if fh is not None:
                        yield info.name, fh.read()
    except tarfile.TarError:
        raise ClientError(f"{path}: not a zip or tar archive") from None


def merge_masks(
    images: str | os.PathLike[str], masks: str | os.PathLike[str], out: str | os.PathLike[str]
) -> Path:
    """Write ``out`` (a zip): the members of ``images``, then those of ``masks`` under ``masks/``."""
    images, masks, out = Path(images), Path(masks), Path(out)
    for path in (images, masks):
        if not path.is_file():
            raise ClientError(f"{path}: no such file")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as merged:
        for name, data in _members(images):
            merged.writestr(name, data)
        for name, data in _members(masks):
            relative = name[len(MASK_FOLDER) :] if name.startswith(MASK_FOLDER) else name
            merged.writestr(MASK_FOLDER + relative, data)
    return out
