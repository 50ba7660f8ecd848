"""The pure-Python framing checks the upload validator runs first (no torch, no numpy): safetensors
headers, zip directories, the format sniffed from the first bytes."""

from __future__ import annotations

import json
import struct
import zipfile

import pytest

from sbengine.uploads.formats import Rejected, check_framing, inspect_zip, parse_safetensors_header, sniff


def safetensors_bytes(
    tensors: dict[str, tuple[str, list[int], bytes]], *, header_len: int | None = None
) -> bytes:
    """A safetensors file from ``{name: (dtype, shape, data)}`` (laid out in order)."""
    header, data, offset = {}, b"", 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header).encode()
    return struct.pack("<Q", header_len if header_len is not None else len(text)) + text + data


def write(tmp_path, data: bytes, name: str = "f"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_valid_header_is_parsed_without_reading_the_data(tmp_path):
    path = write(tmp_path, safetensors_bytes({"w": ("F32", [2, 3], bytes(24)), "b": ("I64", [2], bytes(16))}))
    assert sniff(path) == "safetensors"
    header = parse_safetensors_header(path)
    assert header.tensors["w"].shape == (2, 3) and header.tensors["b"].dtype == "I64"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00", "shorter than"),
        (safetensors_bytes({"w": ("F32", [4], bytes(16))})[:-3], "truncated"),
        (safetensors_bytes({"w": ("F32", [4], bytes(16))}, header_len=2**62), "outside"),
        (safetensors_bytes({"w": ("F32", [4], bytes(16))}, header_len=10**6), "truncated"),
        (safetensors_bytes({"w": ("F32", [2**40, 2**40], bytes(16))}), "needs"),
        (safetensors_bytes({"w": ("F32", [-1], bytes(16))}), "shape"),
        (safetensors_bytes({"w": ("F4", [4], bytes(16))}), "dtype"),
        (struct.pack("<Q", 5) + b"{bad}", "not valid JSON"),
    ],
)
def test_broken_or_absurd_headers_are_refused(tmp_path, data, message):
    with pytest.raises(Rejected) as caught:
        parse_safetensors_header(write(tmp_path, data))
    assert message in caught.value.detail and caught.value.status == 422


def test_overlapping_or_out_of_range_offsets_are_refused(tmp_path):
    text = json.dumps(
        {
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
        }
    ).encode()
    with pytest.raises(Rejected, match="overlap"):
        parse_safetensors_header(write(tmp_path, struct.pack("<Q", len(text)) + text + bytes(6)))
    text = json.dumps({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4_000_000]}}).encode()
    with pytest.raises(Rejected, match="outside"):
        parse_safetensors_header(write(tmp_path, struct.pack("<Q", len(text)) + text + bytes(4)))


def test_zip_bombs_are_refused_from_their_directory(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", bytes(50 << 20))  # 50 MiB of zeros: ~50 KiB compressed
    assert path.stat().st_size < 1 << 20
    with pytest.raises(Rejected) as caught:
        inspect_zip(path, max_total_bytes=1 << 20, what="the .npz file")
    assert caught.value.status == 413 and "expands to more than" in caught.value.detail
    with pytest.raises(Rejected, match="zip bomb"):
        inspect_zip(path, max_total_bytes=1 << 30, what="the .npz file")


def test_a_truncated_zip_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", bytes(1000))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(Rejected, match="not a readable zip"):
        inspect_zip(path, max_total_bytes=1 << 20, what="the .npz file")


def test_a_pickle_or_torchscript_archive_is_refused_before_anything_reads_it(tmp_path):
    with pytest.raises(Rejected, match="raw pickle"):
        check_framing(write(tmp_path, b"\x80\x02}q\x00."), kind="checkpoint", max_total_bytes=1 << 20)
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/data.pkl", b"x")
        archive.writestr("m/code/__torch__.py", b"x")
    with pytest.raises(Rejected, match="TorchScript"):
        check_framing(path, kind="checkpoint", max_total_bytes=1 << 20)
    safetensors = write(tmp_path, safetensors_bytes({"w": ("F32", [4], bytes(16))}), "w.safetensors")
    assert check_framing(safetensors, kind="dataset", max_total_bytes=1 << 20) == "safetensors"
