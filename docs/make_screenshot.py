"""Screenshots of a real audit report and of the web UI for the README: docs/report.png, docs/index.png.

Runs the README's flow on a server (LMS-5, the (100,2)-FCN trained to 99.99% train accuracy, an audit with
the randomization, feature-dependence, PGD and UAP checks), then photographs the pages with headless
Chromium (selenium; Debian's chromium and chromium-driver), full page at 1280 px, quantized to a palette
so the PNG stays small enough to commit.

    .venv/bin/python docs/make_screenshot.py                                   # a throwaway `sbaudit serve`
    .venv/bin/python docs/make_screenshot.py --url http://127.0.0.1:8000 --key sbk_...   # an existing one
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from browser_support import chrome, full_page_png, log_in  # noqa: E402
from e2e_flows import FCN, SMALL_LMS5, TRAINING, create, ready  # noqa: E402
from e2e_support import start_server  # noqa: E402

MAX_BYTES = 1_500_000
AUDIT = {
    "checks": ["randomization", "feature_dependence", "pgd", "uap"],
    "simple_blocks": [0],
    "repeats": 5,
    "name": "LMS-5, (100,2)-FCN",
    "options": {"pgd": {"steps": 20}, "uap": {"steps": 20, "epochs": 1}},
}


def run_flow(client: httpx.Client) -> dict:
    dataset = ready(
        client, "datasets", create(client, "/v1/datasets", {**SMALL_LMS5, "name": "LMS-5 (small)"})
    )
    model = ready(client, "models", create(client, "/v1/models", {
        "dataset_id": dataset["id"], "architecture": FCN, "training": TRAINING, "seed": 0,
        "name": "(100,2)-FCN, SGD"}))  # fmt: skip
    return ready(client, "audits", create(client, "/v1/audits", {"model_id": model["id"], **AUDIT}))


def shrink(path: Path) -> None:
    """Crop the blank space below the page; quantize to 256 colours (flat colours and line plots: no
    visible change)."""
    from PIL import Image, ImageChops

    image = Image.open(path).convert("RGB")
    background = Image.new("RGB", image.size, image.getpixel((image.width - 1, image.height - 1)))
    content = ImageChops.difference(image, background).getbbox()
    if content is not None:  # drop the empty window below short pages
        image = image.crop((0, 0, image.width, min(image.height, content[3] + 40)))
    buffer = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        buffer, format="PNG", optimize=True
    )
    path.write_bytes(buffer.getvalue())


def screenshots(base_url: str, key: str, audit: dict, out: Path) -> list[Path]:
    driver = chrome()
    try:
        log_in(driver, base_url, key)
        index = full_page_png(driver, out / "index.png")
        driver.get(f"{base_url}/v1/audits/{audit['id']}/report")
        report = full_page_png(driver, out / "report.png")
    finally:
        driver.quit()
    for path in (index, report):
        shrink(path)
    return [report, index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one in a temporary directory)")
    parser.add_argument("--key", help="its API key (with --url)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go (default docs/)")
    args = parser.parse_args()
    if bool(args.url) != bool(args.key):
        parser.error("--url and --key go together")
    with tempfile.TemporaryDirectory() as tmp:
        server = None if args.url else start_server(Path(tmp), SBAUDIT_WORKERS="1")
        base_url, key = (args.url.rstrip("/"), args.key) if args.url else (server.base_url, server.key)
        try:
            with httpx.Client(
                base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=90
            ) as client:
                audit = run_flow(client)
            paths = screenshots(base_url, key, audit, args.out)
        finally:
            if server is not None:
                server.proc.stop()
    for path in paths:
        size = path.stat().st_size
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {size / 1e6:.2f} MB")
        if size > MAX_BYTES:
            print(f"warning: {path.name} is over {MAX_BYTES / 1e6:.1f} MB", file=sys.stderr)
    print(f"verdict: {audit['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
