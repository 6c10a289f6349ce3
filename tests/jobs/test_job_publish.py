"""Publishing: the _SUCCESS marker and the atomic `latest` pointer."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from batchrank.jobs.publish import (
    SUCCESS_NAME,
    read_latest,
    success_certificate,
    update_latest,
)
from batchrank.scoring.commit import PublishedFile
from batchrank.storage import sha256_file


def _export(root: Path, date: str) -> Path:
    folder = root / date
    folder.mkdir(parents=True)
    out = folder / "top.parquet"
    out.write_bytes(b"rows of " + date.encode())
    manifest = folder / "top.parquet.manifest.json"
    manifest.write_text(json.dumps({"job": {"name": "t", "date": date}}))
    return out


def test_success_marker_lists_files_with_sizes_and_hashes(tmp_path: Path) -> None:
    out = _export(tmp_path, "2025-01-31")
    manifest = out.with_name(out.name + ".manifest.json")
    elsewhere = tmp_path / "rejects.csv"
    elsewhere.write_text("file,row\n")
    cert = success_certificate(out.parent, job="t", date=dt.date(2025, 1, 31), run_id="r1")
    published = [PublishedFile(f, *sha256_file(f)) for f in (out, manifest, elsewhere)]
    cert.make(published, []).commit().finalize()
    marker = cert.target
    assert marker == out.parent / SUCCESS_NAME
    record = json.loads(marker.read_text())
    assert (record["job"], record["date"], record["run_id"]) == ("t", "2025-01-31", "r1")
    assert [f["path"] for f in record["files"]] == [
        "top.parquet",
        "top.parquet.manifest.json",
        "../rejects.csv",
    ]
    assert record["files"][0]["bytes"] == out.stat().st_size
    assert record["files"][0]["sha256"] == sha256_file(out)[0]
    assert len(record["files"][0]["sha256"]) == 64  # plain hex, as in the manifest
    assert not [p for p in out.parent.iterdir() if "tmp" in p.name]


def test_latest_points_at_the_newest_output_and_a_backfill_leaves_it(tmp_path: Path) -> None:
    pointer = tmp_path / "latest"
    jan31 = _export(tmp_path, "2025-01-31")
    assert update_latest(pointer, jan31, date=dt.date(2025, 1, 31))
    assert pointer.read_text() == "2025-01-31/top.parquet\n"
    assert read_latest(pointer) == jan31.resolve()
    feb01 = _export(tmp_path, "2025-02-01")
    assert update_latest(pointer, feb01, date=dt.date(2025, 2, 1))
    assert read_latest(pointer) == feb01.resolve()
    # a backfill of an earlier date keeps the pointer on the newer export
    jan15 = _export(tmp_path, "2025-01-15")
    assert not update_latest(pointer, jan15, date=dt.date(2025, 1, 15))
    assert read_latest(pointer) == feb01.resolve()
    # re-running the same date keeps pointing at it
    assert update_latest(pointer, feb01, date=dt.date(2025, 2, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "2025-01-15",
        "2025-01-31",
        "2025-02-01",
        "latest",
    ]


def test_unreadable_latest_is_replaced(tmp_path: Path) -> None:
    pointer = tmp_path / "latest"
    pointer.write_text("")
    assert read_latest(pointer) is None
    out = _export(tmp_path, "2025-01-31")
    assert update_latest(pointer, out, date=dt.date(2025, 1, 31))
    assert read_latest(pointer) == out.resolve()
