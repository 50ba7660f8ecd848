"""POST /v1/datasets/uploads with tables (CSV, Parquet) and image archives (zip, tar): what is accepted,
and every refusal a clear 4xx naming the problem with nothing left behind (issue 16)."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib

import numpy as np
import pytest
from real_data import csv_bytes, leaky_table, parquet_bytes, tar_bytes
from service_testing import problem
from upload_testing import assert_nothing_left, stored_files, upload

from service.settings import Settings

ROUTE = "/v1/datasets/uploads"
SITE = [{"name": "site", "columns": ["hospital_id"]}]
BACKGROUND = [{"name": "background", "mask": "complement"}]


@pytest.fixture
def settings(tmp_path, clean_env) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_upload_bytes=4 << 20, max_samples=1000)


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with one tiny compressed row of data: a
    decompression bomb as far as any reader that trusts the header is concerned."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def image_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def small_images(n: int = 4, size: int = 8, *, masks: bool = True, mask_size: int | None = None):
    rng = np.random.default_rng(0)
    members = {}
    for i in range(n):
        cls = "cat" if i % 2 else "dog"
        members[f"train/{cls}/{i}.png"] = png(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        if masks:
            m = mask_size or size
            region = np.zeros((m, m), dtype=np.uint8)
            region[m // 4 : 3 * m // 4, m // 4 : 3 * m // 4] = 255
            members[f"masks/train/{cls}/{i}.png"] = png(region)
    return members


def refused(client, auth, settings, data: bytes, status: int = 422, *, filename="data.zip", **fields):
    before = stored_files(settings)
    body = problem(upload(client, auth, ROUTE, data, filename=filename, **fields), status)
    assert_nothing_left(settings, before)
    assert client.get("/v1/datasets", headers=auth).json()["data"] == [], "no dataset row"
    return body


# --- tables ----------------------------------------------------------------------------------------------


def test_a_table_becomes_named_column_blocks(client, auth):
    table = leaky_table(n=40)
    response = upload(
        client, auth, ROUTE, parquet_bytes(table), filename="t.parquet", label="y", split_column="split",
        categorical=["hospital_id"],
        blocks=[*SITE, {"name": "measurements", "columns": ["m0", "m1", "m2", "m3", "m4"]}],
    )  # fmt: skip
    assert response.status_code == 201, response.text
    dataset = response.json()
    site, measurements, rest = dataset["blocks"]
    assert site["indices"] == [0, 1, 2, 3, 4, 5] and site["params"] == {"columns": ["hospital_id"]}
    assert measurements["indices"] == [6, 7, 8, 9, 10] and rest["name"] == "other columns"
    assert rest["params"]["columns"] == ["noise"] and dataset["sizes"] == {"train": 20, "val": 10, "test": 10}
    assert dataset["feature_names"][:7] == [
        "hospital_id=H0",
        *(f"hospital_id=H{i}" for i in range(1, 6)),
        "m0",
    ]


@pytest.mark.parametrize(
    ("mutate", "fields", "field", "words"),
    [
        (lambda t: t.__setitem__("m2", ["" if i == 3 else v for i, v in enumerate(t["m2"])]), {}, "body.file",
         ["'m2'", "missing value", "row 4"]),
        (lambda t: None, {"categorical": None}, "body.file", ["'hospital_id'", "not numeric", "categorical"]),
        (lambda t: None, {"split_column": None}, "body.file", ["'split'", "not numeric", "categorical"]),
        (lambda t: None, {"label": "outcome"}, "body.label", ["no column 'outcome'"]),
        (lambda t: None, {"blocks": [{"name": "site", "columns": ["hospital"]}]}, "body.blocks.0.columns",
         ["no column 'hospital'"]),
        (lambda t: None, {"blocks": [{"name": "site", "columns": ["y"]}]}, "body.blocks.0.columns",
         ["label column"]),
        (lambda t: None, {"split_column": "m0"}, "body.split_column", ["train/val/test"]),
        (lambda t: None, {"label": None}, "body.label", ["label"]),
    ],
)  # fmt: skip
def test_table_refusals_name_the_column(client, auth, settings, mutate, fields, field, words):
    table = leaky_table(n=40)
    mutate(table)
    form = {"label": "y", "split_column": "split", "categorical": ["hospital_id"], "blocks": SITE, **fields}
    body = refused(client, auth, settings, csv_bytes(table), filename="t.csv", **form)
    assert body["errors"][0]["field"] == field, body
    for word in words:
        assert word in body["detail"], body["detail"]


def test_columns_and_masks_are_refused_for_arrays_and_the_schema_wants_one_kind(client, auth, settings):
    x = np.zeros((4, 3), np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=np.array([0, 1, 0, 1]))
    body = refused(client, auth, settings, buffer.getvalue(), filename="a.npz", blocks=SITE)
    assert "not a table" in body["detail"]
    body = refused(
        client, auth, settings, buffer.getvalue(), blocks=[{"name": "a", "indices": [0], "mask": "region"}]
    )
    assert body["errors"][0]["field"].startswith("body.blocks.0")


# --- image archives --------------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["zip", "tar"])
def test_an_image_folder_with_masks_is_stored_as_uint8_with_regions(client, auth, container):
    members = small_images()
    data = image_zip(members) if container == "zip" else tar_bytes(members)
    response = upload(
        client, auth, ROUTE, data, filename=f"photos.{container}", blocks=BACKGROUND, image_size=[16, 16]
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["input_shape"] == [3, 16, 16] and dataset["num_classes"] == 2
    assert [(b["name"], b["kind"], b["params"]) for b in dataset["blocks"]] == [
        ("background", "mask", {"mask": "complement"}),
        ("rest", "mask", {"mask": "region"}),
    ]
    assert dataset["spec"]["upload"]["format"] == f"images ({container})"
    assert dataset["classes"] == ["cat", "dog"] and dataset["feature_names"] is None


def test_the_budget_counts_an_image_datasets_masks(client, auth, db):
    from service.estimates import dataset_bytes
    from service.models import Dataset

    response = upload(client, auth, ROUTE, image_zip(small_images()), blocks=BACKGROUND)
    with db.read_session() as session:
        description = session.get(Dataset, response.json()["id"]).description
    assert description["input_shape"] == [3, 8, 8] and description["sizes"] == {"train": 4}
    assert description["storage"] == "uint8" and description["masks"] == ["train"]
    without_masks = 4 * (3 * 64 * 4 + 8)
    assert dataset_bytes(description) == without_masks + 4 * (64 + 3 * 64)


def test_decoded_images_past_the_output_limit_are_refused_before_decoding(client, auth, settings):
    """Tiny PNGs of one colour that would decode to far more than the upload: 413, nothing decoded."""
    flat = png(np.zeros((1024, 1024, 3), dtype=np.uint8))
    members = {f"train/dog/{i}.png": flat for i in range(6)}
    body = refused(client, auth, settings, image_zip(members), 413, blocks=[{"name": "top", "rows": [0, 4]}])
    assert "would decode to" in body["detail"]


def test_hostile_archives_are_refused_and_leave_nothing(client, auth, settings):
    images = small_images()
    cases = [
        # zip slip: a member path climbing out of the archive
        (image_zip({**images, "../../etc/cron.d/x.png": images["train/dog/0.png"]}), 422, "unsafe path"),
        (image_zip({**images, "/abs/dog/1.png": images["train/dog/0.png"]}), 422, "unsafe path"),
        (image_zip({**images, "train/./dog/5.png": images["train/dog/0.png"]}), 422, "unsafe path"),
        # a 50,000 x 50,000 PNG: refused from its header, nothing decoded
        (image_zip({"train/dog/0.png": png_header_claiming(50_000, 50_000)}), 422, "50000x50000"),
        # a mask whose size differs from its image's
        (image_zip(small_images(mask_size=6)), 422, "a mask must have its image's size"),
        # an image without its mask, a mask without its image
        (image_zip({k: v for k, v in images.items() if k != "masks/train/dog/0.png"}), 422, "has no mask"),
        (
            image_zip({**images, "masks/train/dog/99.png": images["masks/train/dog/0.png"]}),
            422,
            "belongs to no",
        ),
        # not an image, a file outside the layout
        (image_zip({**images, "train/dog/notes.txt": b"hello"}), 422, "not an image"),
        (image_zip({**images, "a/b/c/d.png": images["train/dog/0.png"]}), 422, "layout"),
        (image_zip({"train/dog/0.png": b"\x89PNG\r\n\x1a\nnot really"}), 422, "cannot be decoded"),
    ]
    for data, status, words in cases:
        body = refused(client, auth, settings, data, status, blocks=BACKGROUND)
        assert words in body["detail"], (words, body["detail"])


def test_a_zip_declaring_a_million_members_is_refused_from_its_end_record(client, auth, settings):
    """10^6 tiny files, made cheaply: a one-member zip whose zip64 end records declare 10^6 entries. The
    count is read from the end record before any directory entry is parsed."""
    data = bytearray(image_zip({"train/dog/0.png": b"x"}))
    eocd = data.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", data[eocd + 12 : eocd + 20])
    zip64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 10**6, 10**6, cd_size, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, cd_size, cd_offset, 0)
    body = refused(client, auth, settings, bytes(data[:eocd]) + zip64 + locator + end, blocks=BACKGROUND)
    assert "1000000 members" in body["detail"]


def test_a_member_twice_is_refused(client, auth, settings):
    members = small_images(masks=False)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, blob in [*members.items(), ("train/dog/0.png", members["train/cat/1.png"])]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    body = refused(
        client, auth, settings, out.getvalue(), filename="p.tar", blocks=[{"name": "top", "rows": [0, 4]}]
    )
    assert "appears twice" in body["detail"]


def test_tar_links_and_devices_are_refused(client, auth, settings):
    images = small_images(masks=False)
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as archive:
            for name, data in images.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            special = tarfile.TarInfo("train/dog/link.png")
            special.type, special.linkname = kind, "/etc/passwd"
            archive.addfile(special)
        body = refused(
            client, auth, settings, out.getvalue(), filename="p.tar", blocks=[{"name": "top", "rows": [0, 4]}]
        )
        assert "only regular files" in body["detail"], body["detail"]


def test_mask_blocks_need_masks_and_masks_need_mask_blocks(client, auth, settings):
    body = refused(client, auth, settings, image_zip(small_images(masks=False)), blocks=BACKGROUND)
    assert body["errors"][0]["field"] == "body.blocks.0.mask"
    body = refused(
        client, auth, settings, image_zip(small_images()), blocks=[{"name": "top", "rows": [0, 4]}]
    )
    assert "every block is a mask block" in body["detail"]


def test_attacks_on_a_region_s_are_refused_at_submission(client, auth):
    """pgd and uap confine or measure a perturbation on S's fixed coordinates: with S a per-example region
    they are a 422 naming the checks and the region before anything is queued; the other checks are not."""
    dataset = upload(client, auth, ROUTE, image_zip(small_images()), blocks=BACKGROUND).json()
    model = client.post(
        "/v1/models",
        headers=auth,
        json={"dataset_id": dataset["id"], "architecture": {"name": "fcn", "width": 8, "depth": 1}},
    )
    assert model.status_code == 202, model.text
    audit = {"model_id": model.json()["id"], "simple_blocks": [0], "split": "train"}
    body = problem(client.post("/v1/audits", headers=auth, json={**audit, "checks": ["pgd", "uap"]}), 422)
    assert body["errors"][0]["field"] == "body.checks"
    assert "pgd and uap checks need S as fixed" in body["errors"][0]["message"]
    assert "per-example region (background)" in body["errors"][0]["message"]
    assert client.get("/v1/audits", headers=auth).json()["data"] == []
    ok = client.post("/v1/audits", headers=auth, json={**audit, "checks": ["randomization"]})
    assert ok.status_code == 202, ok.text
