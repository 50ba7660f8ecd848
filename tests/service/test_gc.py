"""`sbaudit gc`: unreferenced blobs older than the grace period, files of finished or vanished jobs,
abandoned uploads and expired idempotency records go; referenced or fresh blobs and running or queued jobs'
files stay; --dry-run removes nothing."""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from service_testing import queue_job
from sqlalchemy import func, select

from sbserver.commands import gc as cli_gc
from service import jobstore
from service.garbage import Collector, collect_garbage
from service.ids import new_id
from service.models import Artifact, IdempotencyRecord, utcnow
from service.storage import ArtifactStore

HOUR = 3600.0


def age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (then, then))
    return path


@pytest.fixture
def data(db, settings):
    """A data dir holding one of each kind of thing gc must keep or remove."""
    store = ArtifactStore(settings.artifacts_dir)
    kept, removed = {}, {}

    referenced = store.put_bytes(b"referenced")
    with db.write_session() as session:
        session.add(Artifact(id=new_id("artifact"), owner="alice", resource_id=new_id("dataset"),
                             kind="arrays", sha256=referenced.sha256, size=referenced.size,
                             content_type="x", filename="a"))  # fmt: skip
    kept["referenced blob"] = age(store.path_for(referenced.sha256), 2 * HOUR)
    removed["old orphan blob"] = age(store.path_for(store.put_bytes(b"orphan, old" * 100).sha256), 2 * HOUR)
    kept["fresh orphan blob"] = store.path_for(store.put_bytes(b"orphan, just written").sha256)
    tmp = store.path_for(referenced.sha256).parent / ".tmp-crashed"
    tmp.write_bytes(b"half")
    removed["old temp file"] = age(tmp, 2 * HOUR)

    running, queued, finished = queue_job(db), queue_job(db), queue_job(db)
    for job_id in (running, finished):
        jobstore.claim_job(db, job_id=job_id, worker_id="w", lease_seconds=60)
    jobstore.end_job(db, job_id=finished, worker_id="w", state="failed", error="x")
    settings.scratch_dir.mkdir(parents=True)
    settings.checkpoints_dir.mkdir(parents=True)

    def scratch(job_id: str) -> Path:
        path = settings.scratch_dir / f"{job_id}-0a1b2c3d"
        path.mkdir()
        (path / "partial.npz").write_bytes(b"p" * 50)
        return age(path, 2 * HOUR)

    def checkpoint(job_id: str, suffix: str = ".pt") -> Path:
        path = settings.checkpoints_dir / f"{job_id}{suffix}"
        path.write_bytes(b"c" * 70)
        return age(path, 2 * HOUR)

    kept["running job's scratch"] = scratch(running)
    kept["running job's checkpoint"] = checkpoint(running)
    kept["queued job's checkpoint (it resumes from it)"] = checkpoint(queued)
    removed["finished job's scratch"] = scratch(finished)
    removed["finished job's checkpoint"] = checkpoint(finished)
    removed["vanished job's scratch"] = scratch("job_gone-gone-gone-gone")
    removed["vanished job's checkpoint being written"] = checkpoint("job_ALSOgoneALSOgone", ".pt.tmp")

    settings.uploads_dir.mkdir(parents=True)
    for name, seconds, bucket in (("abandoned", 2 * HOUR, removed), ("in progress", 0, kept)):
        path = settings.uploads_dir / name.replace(" ", "-")
        path.mkdir()
        (path / "upload").write_bytes(b"u" * 30)
        bucket[f"{name} upload"] = age(path, seconds)

    with db.write_session() as session:
        for key, created in (("old", utcnow() - timedelta(hours=25)), ("new", utcnow())):
            session.add(IdempotencyRecord(owner="alice", key=key, request_hash="h", status_code=202,
                                          response={}, created_at=created))  # fmt: skip
    return kept, removed


def idempotency_keys(db) -> set[str]:
    with db.read_session() as session:
        return set(session.scalars(select(IdempotencyRecord.key)))


def test_gc_removes_orphans_and_keeps_what_is_needed(db, settings, data):
    kept, removed = data
    report = collect_garbage(settings, db, grace_seconds=HOUR)
    for what, path in kept.items():
        assert path.exists(), f"gc removed the {what}"
    for what, path in removed.items():
        assert not path.exists(), f"gc kept the {what}"
    assert sorted(str(r.path) for r in report.removed) == sorted(str(p) for p in removed.values())
    assert report.bytes_freed == 1100 + 4 + 50 + 70 + 50 + 70 + 30
    assert report.idempotency_records == 1 and idempotency_keys(db) == {"new"}
    # The referenced blob still downloads; nothing is left to collect.
    assert collect_garbage(settings, db, grace_seconds=HOUR).removed == []


def test_a_dry_run_lists_and_removes_nothing(db, settings, data):
    kept, removed = data
    report = collect_garbage(settings, db, grace_seconds=HOUR, dry_run=True)
    assert sorted(str(r.path) for r in report.removed) == sorted(str(p) for p in removed.values())
    assert all(path.exists() for path in [*kept.values(), *removed.values()])
    assert report.idempotency_records == 1 and idempotency_keys(db) == {"new", "old"}


def test_the_grace_period_protects_recent_blobs_only(db, settings, data):
    kept, _ = data
    collect_garbage(settings, db, grace_seconds=0)
    assert not kept["fresh orphan blob"].exists() and not kept["in progress upload"].exists()
    assert kept["referenced blob"].exists()
    assert kept["running job's scratch"].exists() and kept["running job's checkpoint"].exists()
    assert kept["queued job's checkpoint (it resumes from it)"].exists()


def test_a_blob_referenced_after_the_snapshot_is_kept(db, settings):
    """A job commits the row for a blob between gc's listing and its unlink: the re-check keeps it."""
    store = ArtifactStore(settings.artifacts_dir)
    blob = store.put_bytes(b"about to be referenced")
    age(store.path_for(blob.sha256), 2 * HOUR)
    collector = Collector(settings, db, grace_seconds=HOUR, dry_run=False)
    with db.write_session() as session:
        session.add(Artifact(id=new_id("artifact"), owner="alice", resource_id="ds_x", kind="arrays",
                             sha256=blob.sha256, size=blob.size, content_type="x", filename="a"))  # fmt: skip
    collector._remove_orphan_blob(store.path_for(blob.sha256))
    assert store.exists(blob.sha256)


def test_the_cli_prints_what_it_removed_and_the_bytes_freed(db, settings, data, monkeypatch, capsys):
    monkeypatch.setenv("SBAUDIT_DATA_DIR", str(settings.data_dir))
    _, removed = data
    parser = argparse.ArgumentParser(prog="sbaudit")
    cli_gc.register(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["gc", "--dry-run"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert out.count("would remove ") == len(removed) + 1  # + the idempotency records line
    assert "would free 1374 bytes (1.3 KiB)" in out
    assert all(path.exists() for path in removed.values())

    args = parser.parse_args(["gc", "--grace-seconds", "3600"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    scratch = removed["finished job's scratch"]
    assert f"removed scratch {scratch} (50 bytes)" in out
    assert "removed 1 expired idempotency record\n" in out and "freed 1374 bytes" in out
    assert not any(path.exists() for path in removed.values())
    with db.read_session() as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1
