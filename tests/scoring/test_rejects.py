"""Tests for batchrank.scoring.rejects: the atomically published rejects CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pytest

from batchrank.scoring.ids import REJECTS_SCHEMA
from batchrank.scoring.rejects import RejectsWriter
from batchrank.storage import TMP_MARK

# ---------------------------------------------------------------------------------------------
# RejectsWriter


def _rejects(n: int, start: int = 1) -> pa.Table:
    return pa.table(
        {
            "file": ["in, with comma.csv"] * n,
            "row": pa.array(range(start, start + n), pa.int64()),
            "user_id": [None] + ['a "quoted" id'] * (n - 1),
            "movie_id": ["7"] * n,
            "reason": ["null_user_id"] + ["bad_user_id"] * (n - 1),
        },
        schema=REJECTS_SCHEMA,
    )


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if TMP_MARK in p.name]


def test_rejects_writer_commits_csv(tmp_path):
    target = tmp_path / "out" / "rejects.csv"
    w = RejectsWriter(target)
    assert not target.exists()
    w.write(_rejects(2))
    w.write(None)
    w.write(_rejects(1, start=10).select(["reason", "file", "row", "user_id", "movie_id"]))
    w.close(commit=True)
    w.close(commit=True)  # idempotent
    assert w.rows == 3
    text = target.read_text()
    assert text.splitlines()[0] == "file,row,user_id,movie_id,reason"
    with target.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1:] == [
        ["in, with comma.csv", "1", "", "7", "null_user_id"],
        ["in, with comma.csv", "2", 'a "quoted" id', "7", "bad_user_id"],
        ["in, with comma.csv", "10", "", "7", "null_user_id"],
    ]
    assert _leftovers(target.parent) == []


def test_rejects_writer_discard(tmp_path):
    target = tmp_path / "rejects.csv"
    w = RejectsWriter(target)
    w.write(_rejects(2))
    assert len(_leftovers(tmp_path)) == 1
    w.close(commit=False)
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_rejects_writer_discard_keeps_an_older_file(tmp_path):
    target = tmp_path / "rejects.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), RejectsWriter(target) as w:
        w.write(_rejects(1))
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_rejects_writer_empty_commit_writes_header(tmp_path):
    target = tmp_path / "rejects.csv"
    with RejectsWriter(target):
        pass
    assert target.read_text() == "file,row,user_id,movie_id,reason\n"


def test_rejects_writer_closed(tmp_path):
    w = RejectsWriter(tmp_path / "r.csv")
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write(_rejects(1))
