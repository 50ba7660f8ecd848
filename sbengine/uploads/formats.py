"""Checks of an uploaded file's framing, in pure Python: no torch, no numpy, nothing read beyond headers.

Run by the upload validator (check.py) before it lets safetensors, torch or numpy read anything; the API
process parses nothing of a file. Every check answers with :class:`Rejected`, which the validator returns
as ``{"ok": false, "status": ..., "detail": ..., "field": ...}`` and the API as a problem response.

- ``check_framing``: the format from the first bytes, then the header or zip directory checks below, and
  no TorchScript archives (they hold code).

- ``sniff``: the format from the first bytes (never from the file name).
- ``parse_safetensors_header``: the 8-byte little-endian header length, the JSON header, and each
  tensor's dtype, shape and byte range: lengths, offsets and sizes must be consistent with the file
  before any tensor is read.
- ``inspect_zip``: the central directory of a .pt (torch's zip format) or .npz file: member count, the
  declared uncompressed sizes against the limit (zip bombs), compression ratio, no encryption.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Bytes per element of each safetensors dtype this service reads (fp8 and sub-byte types are refused).
SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_SAFETENSORS_HEADER = 16 << 20
MAX_TENSORS = 100_000
MAX_NDIM = 8
MAX_ZIP_MEMBERS = 100_000
DATASET_FORMATS = ("safetensors", "zip", "tar", "parquet", "csv")
# A member that expands more than this (deflate's ceiling is ~1030) is a bomb, not data.
MAX_COMPRESSION_RATIO = 1000
RATIO_CHECK_MIN_BYTES = 1 << 20


class Rejected(Exception):
    """A client error found in an upload: HTTP ``status``, a one-line ``detail``, the ``field`` at fault, and
    any extra members for the problem body (e.g. ``missing`` / ``unexpected`` tensor names)."""

    def __init__(self, detail: str, *, status: int = 422, field: str = "body.file", **extra: Any) -> None:
        super().__init__(detail)
        self.detail, self.status, self.field, self.extra = detail, status, field, extra

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "field": self.field, "extra": self.extra}


def sniff(path: Path) -> str:
    """``safetensors``, ``zip`` (torch.save's format, .npz, an image archive), ``pickle`` (refused),
    ``tar`` (POSIX/GNU, uncompressed), ``parquet``, ``csv`` (UTF-8 text without NUL bytes), or ``unknown``."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80":  # pickle protocol 2+: torch.save's legacy format, or any pickle
        return "pickle"
    if head[257:262] == b"ustar":
        return "tar"
    if head[:4] == b"PAR1":
        return "parquet"
    if head and b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:  # a multi-byte character cut at 4096 bytes is still text
            if exc.start < len(head) - 4:
                return "unknown"
        return "csv"
    return "unknown"


def zip_entry_count(path: Path) -> int | None:
    """The member count a zip's end-of-central-directory record declares (zip64 too), read from the last
    bytes of the file before any directory entry is parsed: a directory of a million entries is refused
    without building a million ``ZipInfo`` objects. None when there is no such record (not a zip)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - (1 << 16) - 22))
        tail = fh.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        count = struct.unpack("<H", tail[at + 10 : at + 12])[0]
        locator = at - 20
        if count == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
            (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
            if offset + 56 > size:
                return None
            fh.seek(offset)
            record = fh.read(56)
            if record[:4] != b"PK\x06\x06":
                return None
            (count,) = struct.unpack("<Q", record[32:40])
        return int(count)


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_safetensors_header(path: Path) -> SafetensorsHeader:
    """Read and check the header of a safetensors file without touching its tensor data.

    The data area must be covered exactly by the tensors' byte ranges (no gaps, no overlaps, nothing past
    the end) and each range must be exactly ``prod(shape) * itemsize`` bytes: a header claiming absurd
    shapes or sizes is refused here, before any reader allocates for it.
    """
    size = path.stat().st_size
    if size < 8:
        raise Rejected("not a safetensors file: shorter than its 8-byte header length")
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len < 2 or header_len > MAX_SAFETENSORS_HEADER:
            raise Rejected(
                f"safetensors header length {header_len} is outside [2, {MAX_SAFETENSORS_HEADER}] bytes"
            )
        if 8 + header_len > size:
            raise Rejected(
                f"safetensors header claims {header_len} bytes but the file has {size - 8} after the length "
                "(truncated?)"
            )
        raw = fh.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejected(f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise Rejected("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise Rejected("safetensors __metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise Rejected(f"the file holds {len(header)} tensors; at most {MAX_TENSORS} are accepted")
    data_start = 8 + header_len
    data_size = size - data_start
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        tensors[name] = _tensor_info(name, entry, data_size)
    covered = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start != covered:
            what = "overlap" if info.start < covered else "a gap"
            raise Rejected(f"safetensors tensor data has {what} at byte {min(info.start, covered)}")
        covered = info.end
    if covered != data_size:
        raise Rejected(
            f"safetensors tensors cover {covered} bytes but the file holds {data_size} bytes of data"
            + (" (truncated?)" if covered > data_size else "")
        )
    return SafetensorsHeader(tensors=tensors, metadata=metadata, data_start=data_start)


def _tensor_info(name: str, entry: Any, data_size: int) -> TensorInfo:
    where = f"safetensors tensor {name[:100]!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise Rejected(f"{where}: expected exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in SAFETENSORS_ITEMSIZE:
        raise Rejected(
            f"{where}: dtype {str(dtype)[:20]!r} is not accepted ({', '.join(SAFETENSORS_ITEMSIZE)})"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(_is_int(n) and 0 <= n < 2**63 for n in shape)
    ):
        raise Rejected(f"{where}: shape must be a list of at most {MAX_NDIM} non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise Rejected(f"{where}: data_offsets must be [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise Rejected(
            f"{where}: data_offsets [{begin}, {end}] lie outside the {data_size} bytes of data "
            "(truncated file?)"
        )
    expected = math.prod(shape) * SAFETENSORS_ITEMSIZE[dtype]
    if expected != end - begin:
        raise Rejected(
            f"{where}: shape {tuple(shape)} of {dtype} needs {expected} bytes but data_offsets span "
            f"{end - begin}"
        )
    return TensorInfo(dtype=dtype, shape=tuple(shape), start=begin, end=end)


@dataclass(frozen=True)
class ZipMember:
    name: str
    size: int
    compressed: int


def inspect_zip(path: Path, *, max_total_bytes: int, what: str) -> list[ZipMember]:
    """The members of a zip archive, refused when it could expand beyond ``max_total_bytes`` (the sum of
    the *declared* uncompressed sizes, which Python's zip reader never reads past), when a member's ratio
    marks a bomb, or when it uses encryption or an unusual compression."""
    declared = zip_entry_count(path)
    if declared is not None and declared > MAX_ZIP_MEMBERS:
        raise Rejected(f"{what} has {declared} members; at most {MAX_ZIP_MEMBERS} are accepted")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise Rejected(f"{what} is not a readable zip archive (truncated?): {exc}") from None
    if not infos:
        raise Rejected(f"{what} is an empty archive")
    if len(infos) > MAX_ZIP_MEMBERS:
        raise Rejected(f"{what} has {len(infos)} members; at most {MAX_ZIP_MEMBERS} are accepted")
    total = 0
    members = []
    for info in infos:
        if info.flag_bits & 0x1:
            raise Rejected(f"{what}: member {info.filename[:100]!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise Rejected(f"{what}: member {info.filename[:100]!r} uses an unsupported compression")
        total += info.file_size
        if total > max_total_bytes:
            raise Rejected(
                f"{what} expands to more than {max_total_bytes} bytes (the server's upload limit, "
                "SBAUDIT_MAX_UPLOAD_BYTES, applies to the uncompressed contents)",
                status=413,
            )
        if info.file_size > RATIO_CHECK_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            raise Rejected(
                f"{what}: member {info.filename[:100]!r} expands "
                f"{info.file_size // max(info.compress_size, 1)}-fold (a zip bomb?); "
                f"at most {MAX_COMPRESSION_RATIO}-fold is accepted"
            )
        members.append(ZipMember(info.filename, info.file_size, info.compress_size))
    return members


def check_framing(path: Path, *, kind: str, max_total_bytes: int) -> str:
    """The file's format from its first bytes (``safetensors`` or ``zip``), once its header or zip
    directory passed the checks; ``kind`` is ``checkpoint`` or ``dataset``."""
    fmt = sniff(path)
    if fmt == "pickle":
        raise Rejected(
            "a raw pickle is refused: upload safetensors, or a state_dict saved by torch.save in its "
            "(default) zip format"
        )
    if kind == "checkpoint" and fmt not in ("safetensors", "zip"):
        raise Rejected(
            "not a checkpoint: upload a safetensors file or a torch.save'd state_dict (zip format)"
        )
    if kind == "dataset" and fmt not in DATASET_FORMATS:
        raise Rejected(
            "not a dataset file: upload .npz (numpy.savez), safetensors, a table (CSV or Parquet), or "
            "images in a zip or tar archive"
        )
    if fmt == "safetensors":
        parse_safetensors_header(path)
        return fmt
    if fmt in ("tar", "parquet", "csv"):  # their readers check them member by member / column by column
        return fmt
    what = "the checkpoint" if kind == "checkpoint" else "the zip archive"
    members = inspect_zip(path, max_total_bytes=max_total_bytes, what=what)
    if kind == "checkpoint":
        names = [m.name for m in members]
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise Rejected("TorchScript archives are refused (they hold code): upload the model's state_dict")
        if not any(n.endswith("/data.pkl") for n in names):
            raise Rejected("this zip archive is not a torch.save checkpoint (it has no data.pkl)")
    return fmt
