"""Issue 16's two real-data cases against a real `sbaudit serve`, through the CLI as a user would type it
(docs/walkthrough-real-data.md): a table with a leaky hospital column, and Fashion-MNIST garments on
class-coloured backgrounds with a separate mask archive. Trained and audited by the server: the verdicts
say what each model relies on, and the report shows the regions and their composites."""

from __future__ import annotations

import json

import pytest
from e2e_flows import create, ready
from real_data import FASHION_DIR, fashion_archives, leaky_table, parquet_bytes

from sbclient.cli.entry import main

pytest.importorskip("torch")
if not FASHION_DIR.is_dir():  # .ci/run installs it
    pytest.skip(
        "needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
        allow_module_level=True,
    )

FCN = {"name": "fcn", "width": 64, "depth": 2}
TRAINING = {"lr": 0.05, "batch_size": 50, "eval_every": 100, "stop": {"max_updates": 300}}


@pytest.fixture
def cli_env(embedded, monkeypatch):
    monkeypatch.setenv("SBAUDIT_URL", embedded.base_url)
    monkeypatch.setenv("SBAUDIT_API_KEY", embedded.key)


def _cli_upload(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["datasets", "upload", *argv]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _audit(client, dataset_id: str) -> dict:
    model = ready(client, "models", create(client, "/v1/models", {
        "dataset_id": dataset_id, "architecture": FCN, "training": TRAINING, "seed": 0}))  # fmt: skip
    return ready(client, "audits", create(client, "/v1/audits", {"model_id": model["id"], "repeats": 3}))


def test_a_leaky_hospital_column_over_the_cli(embedded, cli_env, tmp_path, capsys):
    table = tmp_path / "patients.parquet"
    table.write_bytes(parquet_bytes(leaky_table()))
    dataset = _cli_upload(capsys, str(table), "--label", "y", "--split-column", "split",
                          "--categorical", "hospital_id", "--block", "site=hospital_id")  # fmt: skip
    assert [b["name"] for b in dataset["blocks"]] == ["site", "other columns"]
    with embedded.client() as client:
        audit = _audit(client, dataset["id"])
    assert audit["verdict_code"] in ("exclusively_s", "mostly_s") and "(site)" in audit["verdict"], audit[
        "verdict"
    ]


def test_garments_on_coloured_backgrounds_over_the_cli(embedded, cli_env, tmp_path, capsys):
    verdicts = {}
    for label, correlation in (("shortcut", 0.95), ("randomized", None)):
        images, masks = fashion_archives(correlation=correlation)
        photos, mask_files = tmp_path / f"{label}.zip", tmp_path / f"{label}-masks.zip"
        photos.write_bytes(images)
        mask_files.write_bytes(masks)
        dataset = _cli_upload(capsys, str(photos), "--masks", str(mask_files),
                              "--block", "background=complement", "--block", "garment=region")  # fmt: skip
        assert dataset["input_shape"] == [3, 28, 28] and dataset["spec"]["upload"]["format"] == "images (zip)"
        with embedded.client() as client:
            audit = _audit(client, dataset["id"])
            if label == "shortcut":
                report = client.get(f"/v1/audits/{audit['id']}/report")
                assert report.status_code == 200 and "Examples and their composites" in report.text
        verdicts[label] = audit
    assert verdicts["shortcut"]["verdict_code"] in ("exclusively_s", "mostly_s"), verdicts["shortcut"][
        "verdict"
    ]
    assert verdicts["randomized"]["verdict_code"] in ("exclusively_sc", "mostly_sc"), verdicts["randomized"][
        "verdict"
    ]
    assert "(garment)" in verdicts["randomized"]["verdict"]
