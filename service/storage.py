"""Content-addressed artifact store on a directory shared by the API and the workers.

A blob lives at ``<root>/<sha[:2]>/<sha>``: the path is derived from the content hash only, never from a
client-supplied name. Writes are atomic (temp file in the store, fsync, rename, fsync of the directory), so
a reader sees either nothing or the whole file, and a crash leaves at most a stray temp file. Identical
content is stored once. The database row (service.models.Artifact) carries owner, type and size.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_file(self, src: Path, *, move: bool = False) -> StoredBlob:
        """Store the file at ``src``. With ``move=True`` the source is consumed (renamed when it is on the
        same filesystem, which avoids copying large weight files)."""
        src = Path(src)
        with open(src, "rb") as fh:
            os.fsync(fh.fileno())
        sha, size = file_sha256(src)
        dest = self.path_for(sha)
        if dest.is_file():
            os.utime(dest)  # tells a concurrent garbage collection that the blob is wanted again
            if move:
                src.unlink()
            return StoredBlob(sha, size)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if move:
            try:
                os.replace(src, dest)
                _fsync_dir(dest.parent)
                return StoredBlob(sha, size)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        tmp = self._copy_to_temp(src, dest.parent)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        if move:
            src.unlink(missing_ok=True)
        return StoredBlob(sha, size)

    def put_bytes(self, data: bytes) -> StoredBlob:
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path_for(sha)
        if dest.is_file():
            os.utime(dest)
            return StoredBlob(sha, len(data))
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)
        return StoredBlob(sha, len(data))

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    @staticmethod
    def _copy_to_temp(src: Path, directory: Path) -> Path:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)
