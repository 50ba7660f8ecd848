"""Uploaded image folders (a zip or tar archive in torchvision's ImageFolder layout) as datasets.

Layout: ``[train/|val/|test/]<class>/<name>.(png|jpg|jpeg|webp)``; without split folders every image is in
the ``test`` split. Classes are the sorted folder names (label i = the i-th name, as ImageFolder does) and
are kept in the dataset's spec. Optional per-example masks lie beside the images in the same archive, at
``masks/<the image's path with .png>`` (non-zero = the region, e.g. the object); with masks, every image
needs one, of its own size. The CLI's ``--masks masks.zip`` merges a separate mask archive under ``masks/``.

Images are decoded with Pillow, converted to RGB and resized to one ``image_size`` (H, W) (default: the
first image's size): bilinear for images, nearest for masks so a mask stays binary. Pixels are stored as
uint8 (``storage="uint8"``) and read as float32 in [0, 1].

Hostile archives are refused before anything large is allocated: member paths that are absolute or climb
(``..``: zip slip, although nothing is ever extracted to disk), links, devices and other special tar
members, more than ``MAX_ZIP_MEMBERS`` members (a zip's count is read from its end record first), declared
sizes past the upload limit (zip bombs), and any image whose header claims more than ``MAX_IMAGE_PIXELS``
pixels (decompression bombs: the header is read, the pixels are not).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sbengine.uploads.formats import MAX_ZIP_MEMBERS, Rejected, inspect_zip
from sbengine.uploads.messages import one_line

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
MASK_FOLDER = "masks"
# Largest decoded image (pixels) accepted: 4096 x 4096. A header claiming more is a decompression bomb.
MAX_IMAGE_PIXELS = 1 << 24
MAX_SIDE = 1024  # the largest declared image_size side
REST_BLOCK = "rest"
# What the stored pixels may take, against the upload limit: the validator's output file limit is about 4x
# the upload (service/uploads/validator.py: OUTPUT_GROWTH), so flat, well-compressed images are bounded.
DECODED_GROWTH = 4


def _safe(name: str) -> str:
    """A member path, refused if it could point outside the archive's root (zip slip)."""
    if (
        name.startswith(("/", "\\"))
        or "\\" in name
        or (len(name) > 1 and name[1] == ":")
        or any(part == ".." for part in name.split("/"))
        or any(ord(c) < 32 for c in name)
        or posixpath.normpath(name.rstrip("/")) != name.rstrip("/")  # "a/./b", "a//b": read as written
    ):
        raise Rejected(
            f"archive member {name[:100]!r} has an unsafe path (absolute, '..', not normalized or control "
            "characters)"
        )
    return name


def _ignored(name: str) -> bool:
    parts = name.split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _zip_members(path: Path, max_bytes: int) -> tuple[list[tuple[str, int]], Callable[[str], bytes]]:
    inspect_zip(path, max_total_bytes=max_bytes, what="the archive")
    archive = zipfile.ZipFile(path)
    members = []
    for info in archive.infolist():
        name = _safe(info.filename)
        if info.is_dir():
            continue
        mode = info.external_attr >> 16
        if mode and (mode & 0o170000) not in (0, 0o100000):
            raise Rejected(f"archive member {name[:100]!r} is not a regular file (a link or device)")
        members.append((name, info.file_size))

    def read(name: str) -> bytes:
        return archive.read(name)

    return members, read


def _tar_members(path: Path, max_bytes: int) -> tuple[list[tuple[str, int]], Callable[[str], bytes]]:
    try:
        archive = tarfile.open(path, "r:")  # noqa: SIM115 - the reader lives as long as the dataset is built
    except (tarfile.TarError, OSError) as exc:
        raise Rejected(f"the file is not a readable tar archive: {one_line(exc)}") from None
    members = []
    infos: dict[str, tarfile.TarInfo] = {}
    total = 0
    try:
        for count, info in enumerate(archive, start=1):
            if count > MAX_ZIP_MEMBERS:
                raise Rejected(f"the archive has more than {MAX_ZIP_MEMBERS} members")
            name = _safe(info.name)
            if info.isdir():
                continue
            if not info.isfile():
                kind = "a link" if info.issym() or info.islnk() else "a device, FIFO or other special file"
                raise Rejected(f"archive member {name[:100]!r} is {kind}; only regular files are accepted")
            total += info.size
            if total > max_bytes:
                raise Rejected(
                    f"the archive expands to more than {max_bytes} bytes (SBAUDIT_MAX_UPLOAD_BYTES)",
                    status=413,
                )
            members.append((name, info.size))
            infos[name] = info
    except tarfile.TarError as exc:
        raise Rejected(f"the tar archive is damaged: {one_line(exc)}") from None

    def read(name: str) -> bytes:
        fh = archive.extractfile(infos[name])
        assert fh is not None  # a regular file
        return fh.read()

    return members, read


def _layout(members: list[tuple[str, int]]) -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """Images ``{path: (split, class, stem path)}`` and masks ``{stem path: path}``."""
    images: dict[str, tuple[str, str, str]] = {}
    masks: dict[str, str] = {}
    stems: set[str] = set()
    seen: set[str] = set()
    for name, _ in members:
        if name in seen:  # a zip or tar may hold a name twice; which one a reader returns is not defined
            raise Rejected(f"archive member {name[:100]!r} appears twice")
        seen.add(name)
        if _ignored(name):
            continue
        stem, ext = posixpath.splitext(name)
        parts = name.split("/")
        if parts[0] == MASK_FOLDER:
            if ext.lower() != ".png":
                raise Rejected(f"mask {name[:100]!r} must be a .png (masks/<the image's path>.png)")
            masks[stem[len(MASK_FOLDER) + 1 :]] = name
            continue
        if ext.lower() not in IMAGE_EXTENSIONS:
            raise Rejected(
                f"archive member {name[:100]!r} is not an image ({', '.join(IMAGE_EXTENSIONS)}) in "
                "[train|val|test/]<class>/<name>"
            )
        if len(parts) == 3 and parts[0] in SPLITS:
            split, cls = parts[0], parts[1]
        elif len(parts) == 2 and parts[0] not in SPLITS:
            split, cls = "test", parts[0]
        else:
            raise Rejected(
                f"image {name[:100]!r} is not in the layout [train|val|test/]<class>/<name> (one class "
                "folder, optionally inside a split folder)"
            )
        if stem in stems:
            raise Rejected(f"two images share the name {stem[:100]!r} (with different extensions)")
        stems.add(stem)
        images[name] = (split, cls, stem)
    if not images:
        raise Rejected("the archive holds no images ([train|val|test/]<class>/<name>.png|jpg|jpeg|webp)")
    return images, masks


def _open(data: bytes, name: str) -> Any:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, ValueError, SyntaxError) as exc:
        raise Rejected(f"image {name[:100]!r} cannot be decoded: {one_line(exc)[:200]}") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:  # from the header; no pixel has been decoded yet
        raise Rejected(
            f"image {name[:100]!r} claims {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} pixels per "
            "image are accepted (a decompression bomb?)"
        )
    return image


def _decode(image: Any, name: str, size: tuple[int, int], *, mask: bool) -> Any:
    import numpy as np
    from PIL import Image

    try:
        image.load()
        if mask:
            array = np.asarray(image.convert("L").resize((size[1], size[0]), Image.Resampling.NEAREST)) > 0
            return array
        rgb = image.convert("RGB")
        if rgb.size != (size[1], size[0]):
            rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, SyntaxError) as exc:
        raise Rejected(f"image {name[:100]!r} cannot be decoded: {one_line(exc)[:200]}") from None


def _rows(images: dict[str, tuple[str, str, str]]) -> Iterator[tuple[str, str, str, str]]:
    for name in sorted(images):
        split, cls, stem = images[name]
        yield name, split, cls, stem


def read_images(request: dict[str, Any], path: Path, fmt: str) -> dict[str, Any]:
    """Everything ``check_dataset`` needs to build the dataset: uint8 splits, masks, resolved blocks."""
    import numpy as np
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # _open checks every header's size itself, naming the image and its size
    max_bytes = int(request["max_bytes"])
    members, read = _zip_members(path, max_bytes) if fmt == "zip" else _tar_members(path, max_bytes)
    images, masks = _layout(members)
    with_masks = bool(masks)
    if with_masks:
        for name, (_, _, stem) in sorted(images.items()):
            if stem not in masks:
                raise Rejected(f"image {name[:100]!r} has no mask (expected masks/{stem[:100]}.png)")
        orphan = sorted(set(masks) - {stem for _, _, stem in images.values()})
        if orphan:
            raise Rejected(f"mask {masks[orphan[0]][:100]!r} belongs to no image")
    classes = sorted({cls for _, cls, _ in images.values()})
    max_samples = int(request["max_samples"])
    counts = {s: sum(1 for v in images.values() if v[0] == s) for s in SPLITS}
    for split, count in counts.items():
        if count > max_samples:
            raise Rejected(
                f"the {split} split has {count} images; this server's limit is {max_samples} "
                "(SBAUDIT_MAX_SAMPLES)"
            )
    size = request.get("image_size")
    xs: dict[str, list[Any]] = {s: [] for s in SPLITS}
    ys: dict[str, list[int]] = {s: [] for s in SPLITS}
    ms: dict[str, list[Any]] = {s: [] for s in SPLITS}
    for name, split, cls, stem in _rows(images):
        image = _open(read(name), name)
        if size is None:
            size = [image.size[1], image.size[0]]
            if max(size) > MAX_SIDE:
                raise Rejected(
                    f"the first image is {size[1]}x{size[0]}; declare a smaller image_size "
                    f"(at most {MAX_SIDE})",
                    field="body.image_size",
                )
        shape = (int(size[0]), int(size[1]))
        if not xs["train"] and not xs["val"] and not xs["test"]:  # once, before decoding anything
            decoded = len(images) * (3 + with_masks) * shape[0] * shape[1]
            if decoded > DECODED_GROWTH * max_bytes:
                raise Rejected(
                    f"the {len(images)} images would decode to {decoded} bytes at {shape[0]}x{shape[1]}, "
                    f"more than this server stores for an upload of its size limit ({DECODED_GROWTH} x "
                    "SBAUDIT_MAX_UPLOAD_BYTES); declare a smaller image_size or send fewer images",
                    status=413,
                )
        if with_masks:
            mask = _open(read(masks[stem]), masks[stem])
            if mask.size != image.size:
                raise Rejected(
                    f"mask {masks[stem][:100]!r} is {mask.size[0]}x{mask.size[1]} but its image is "
                    f"{image.size[0]}x{image.size[1]}; a mask must have its image's size"
                )
            ms[split].append(_decode(mask, masks[stem], shape, mask=True))
        xs[split].append(_decode(image, name, shape, mask=False))
        ys[split].append(classes.index(cls))
    assert size is not None
    splits = {
        s: (np.stack(xs[s]).astype(np.float32) / np.float32(255), np.asarray(ys[s], dtype=np.int64))
        for s in SPLITS
        if xs[s]
    }
    region_masks = {s: np.stack(ms[s]) for s in SPLITS if ms[s]}
    input_shape = (3, int(size[0]), int(size[1]))
    return {
        "splits": splits,
        "input_shape": input_shape,
        "masks": region_masks,
        "num_classes": len(classes),
        "spec": {
            "images": {
                "classes": classes,
                "image_size": list(input_shape[1:]),
                "masks": with_masks,
                "resize": "bilinear (masks: nearest)",
                "counts": {s: c for s, c in counts.items() if c},
            }
        },
    }


def mask_blocks(declared: list[dict[str, Any]], has_masks: bool) -> list[Any]:
    """The declared region blocks; with only one side of the mask declared, the other becomes ``rest``."""
    from sbengine.data.dataset import MASK_KIND, FeatureBlock

    blocks = []
    sides = set()
    for i, block in enumerate(declared):
        if block.get("mask") is None:
            raise Rejected(
                'with per-example regions every block is a mask block ({"name": ..., "mask": "region" or '
                '"complement"}); boxes and indices would overlap them',
                field=f"body.blocks.{i}",
            )
        if not has_masks:
            raise Rejected(
                "a mask block needs masks in the archive (masks/<the image's path>.png; the CLI's --masks)",
                field=f"body.blocks.{i}.mask",
            )
        if block["mask"] in sides:
            raise Rejected(
                f"another block already is the mask's {block['mask']}", field=f"body.blocks.{i}.mask"
            )
        sides.add(block["mask"])
        blocks.append(
            FeatureBlock(name=block["name"], kind=MASK_KIND, indices=(), params={"mask": block["mask"]})
        )
    if len(sides) == 1:
        other = "complement" if "region" in sides else "region"
        if any(b.name == REST_BLOCK for b in blocks):
            raise Rejected(f"the block name {REST_BLOCK!r} is taken by the mask's other side")
        blocks.append(FeatureBlock(name=REST_BLOCK, kind=MASK_KIND, indices=(), params={"mask": other}))
    return blocks
