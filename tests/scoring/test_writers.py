"""Title join and the atomic, split-invariant output writers."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrank.errors import ConfigError, OutputError
from batchrank.scoring import row_groups
from batchrank.scoring.titles import join_titles
from batchrank.scoring.writers import LONG_COLUMNS, OutputWriter
from batchrank.storage import TMP_MARK

TRICKY = [
    "Plain",
    "Comma, The",
    'Say "Hi"',
    "Line\nbreak",
    "Carriage\r\nreturn",
    "日本",
    "🎬 Movie",
    "",
    " padded ",
    "back\\slash",
    "tab\there",
    None,
]

COMBOS = [
    ("parquet", "long"),
    ("parquet", "nested"),
    ("csv", "long"),
    ("jsonl", "long"),
    ("jsonl", "nested"),
]


def ranked(n_users: int, per_user: int, *, str_ids: bool = False, seed: int = 0) -> pa.Table:
    """Ranked rows as ``join_titles`` returns them: complete users, sorted."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    ranks = np.tile(np.arange(1, per_user + 1), n_users).astype(np.int32)
    movies = rng.integers(0, 10_000, users.size)
    score = rng.random(users.size).astype(np.float32) * np.float32(1.3) - np.float32(0.1)
    stars = np.clip(score * 5, 0, 5).astype(np.float32)
    titles = [TRICKY[int(m) % len(TRICKY)] for m in movies]
    uid: pa.Array = pa.array(users, pa.int64())
    mid: pa.Array = pa.array(movies, pa.int64())
    if str_ids:
        uid = pa.array([f"u{u:05d}-é" for u in users], pa.string())
        mid = pa.array([f"m,{m}" for m in movies], pa.string())
    return pa.table(
        {
            "user_id": uid,
            "rank": pa.array(ranks, pa.int32()),
            "movie_id": mid,
            "title": pa.array(titles, pa.string()),
            "stars": pa.array(stars, pa.float32()),
            "score": pa.array(score, pa.float32()),
        }
    )


def write(path: Path, fmt: str, layout: str, tables: list[pa.Table], **kw: Any) -> dict[str, Any]:
    w = OutputWriter(path, format=fmt, layout=layout, metadata={"batchrank.top_k": "3"}, **kw)  # type: ignore[arg-type]
    for t in tables:
        w.write(t)
    return w.close(commit=True)


def long_rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.select(list(LONG_COLUMNS)).to_pylist()


def read_back(path: Path, fmt: str, layout: str, str_ids: bool) -> list[dict[str, Any]]:
    """Read an output file back as long rows (floats as float32-exact Python floats)."""
    if fmt == "parquet":
        t = pq.read_table(path)
        if layout == "long":
            return t.to_pylist()
        return [{"user_id": r["user_id"], **item} for r in t.to_pylist() for item in r["items"]]
    if fmt == "csv":
        id_type = pl.String if str_ids else pl.Int64
        df = pl.read_csv(
            path,
            schema={
                "user_id": id_type,
                "rank": pl.Int32,
                "movie_id": id_type,
                "title": pl.String,
                "stars": pl.Float32,
                "score": pl.Float32,
            },
        )
        rows_pl = df.to_arrow().to_pylist()
        # Python's csv module: empty field is a null title, '""' is an empty title.
        with open(path, newline="", encoding="utf-8") as f:
            rows_csv = list(csv.DictReader(f))
        assert len(rows_csv) == len(rows_pl)
        for a, b in zip(rows_pl, rows_csv, strict=True):
            assert b["title"] == (a["title"] or "")
            assert np.float32(float(b["stars"])) == np.float32(a["stars"])
            assert str(a["user_id"]) == b["user_id"]
        return rows_pl
    lines = path.read_text(encoding="utf-8").splitlines()
    objs = [json.loads(line) for line in lines]
    if layout == "nested":
        objs = [{"user_id": o["user_id"], **item} for o in objs for item in o["items"]]
    for o in objs:
        o["stars"] = float(np.float32(o["stars"]))
        o["score"] = float(np.float32(o["score"]))
    return objs


@pytest.mark.parametrize(("fmt", "layout"), COMBOS)
@pytest.mark.parametrize("str_ids", [False, True])
def test_round_trip(tmp_path: Path, fmt: str, layout: str, str_ids: bool) -> None:
    table = ranked(40, 3, str_ids=str_ids)
    out = tmp_path / f"recs.{fmt}"
    info = write(out, fmt, layout, [table.slice(0, 50), table.slice(50)])
    assert info["rows"] == 120 and info["users"] == 40
    assert info["bytes"] == out.stat().st_size
    assert len(info["sha256"]) == 64
    assert read_back(out, fmt, layout, str_ids) == long_rows(table)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_jsonl_is_utf8_and_nulls(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    write(out, "jsonl", "long", [ranked(3, len(TRICKY))])
    text = out.read_bytes().decode("utf-8")
    assert "日本" in text and "🎬" in text
    assert '"title":null' in text
    first = text.splitlines()[0]
    assert list(json.loads(first)) == list(LONG_COLUMNS)


def test_nested_jsonl_shape(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    write(out, "jsonl", "nested", [ranked(2, 2)])
    objs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [o["user_id"] for o in objs] == [0, 1]
    assert list(objs[0]) == ["user_id", "items"]
    assert list(objs[0]["items"][0]) == ["rank", "movie_id", "title", "stars", "score"]


def test_csv_header_and_quoting(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    table = ranked(1, 60)
    write(out, "csv", "long", [table])
    data = out.read_bytes()
    assert data.startswith(b"user_id,rank,movie_id,title,stars,score\n")
    assert b'"Comma, The"' in data
    assert b'"Say ""Hi"""' in data
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert [r[3] for r in rows[1:]] == [t or "" for t in table.column("title").to_pylist()]
    assert set(TRICKY) <= set(table.column("title").to_pylist())


def _splits(table: pa.Table, cuts: list[int], users_only: bool) -> list[pa.Table]:
    n = table.num_rows
    if users_only:
        users = table.column("user_id").to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        cuts = [int(starts[c % len(starts)]) for c in cuts]
    edges = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return [table.slice(lo, hi - lo) for lo, hi in itertools.pairwise(edges)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts_a=st.lists(st.integers(0, 10_000), max_size=12),
    cuts_b=st.lists(st.integers(0, 10_000), max_size=12),
    users_only=st.booleans(),
    combo=st.sampled_from(COMBOS),
)
def test_bytes_do_not_depend_on_splits(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cuts_a: list[int],
    cuts_b: list[int],
    users_only: bool,
    combo: tuple[str, str],
) -> None:
    monkeypatch.setattr(row_groups, "ROW_GROUP_ROWS", 37)
    monkeypatch.setattr(row_groups, "ROW_GROUP_USERS", 7)
    fmt, layout = combo
    table = ranked(60, 4, seed=len(cuts_a))
    a = write(tmp_path / "a.out", fmt, layout, _splits(table, cuts_a, users_only))
    b = write(tmp_path / "b.out", fmt, layout, _splits(table, cuts_b, users_only))
    assert (tmp_path / "a.out").read_bytes() == (tmp_path / "b.out").read_bytes()
    assert a["sha256"] == b["sha256"] and a["users"] == b["users"] == 60
    assert read_back(tmp_path / "a.out", fmt, layout, False) == long_rows(table)
    if fmt == "parquet":
        md = pq.ParquetFile(tmp_path / "a.out").metadata
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        assert sizes == ([37] * 6 + [18] if layout == "long" else [7] * 8 + [4])


@pytest.mark.parametrize("layout", ["long", "nested"])
def test_parquet_real_row_groups_and_metadata(tmp_path: Path, layout: str) -> None:
    table = ranked(10_000, 10)
    out = tmp_path / "r.parquet"
    write(out, "parquet", layout, list(_splits(table, [12_345, 40_000, 77_777], True)))
    f = pq.ParquetFile(out)
    sizes = [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)]
    assert sizes == ([65_536, 34_464] if layout == "long" else [8_192, 1_808])
    kv = f.metadata.metadata
    assert kv[b"batchrank.top_k"] == b"3"
    assert f.metadata.row_group(0).column(0).compression == "ZSTD"
    assert f.schema_arrow.field("user_id").type == pa.int64()
    if layout == "nested":
        assert f.schema_arrow.field("items").type.value_type.names == list(LONG_COLUMNS[1:])


@pytest.mark.parametrize(("fmt", "layout"), COMBOS)
def test_empty_output(tmp_path: Path, fmt: str, layout: str) -> None:
    out = tmp_path / "empty"
    info = write(out, fmt, layout, [ranked(0, 3)], user_type=pa.string())
    assert info["rows"] == 0 and info["users"] == 0
    if fmt == "parquet":
        t = pq.read_table(out)
        assert t.num_rows == 0
        assert t.schema.field("user_id").type == pa.string()
    elif fmt == "csv":
        assert out.read_text() == "user_id,rank,movie_id,title,stars,score\n"
    else:
        assert out.read_bytes() == b""


def test_nothing_at_out_before_commit(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "r.parquet"
    w = OutputWriter(out, format="parquet", layout="long", metadata={})
    w.write(ranked(5, 3))
    assert not out.exists()
    temps = list(out.parent.iterdir())
    assert len(temps) == 1 and temps[0].name.startswith(f".{out.name}{TMP_MARK}")
    w.close(commit=True)
    assert out.exists() and [p.name for p in out.parent.iterdir()] == [out.name]


@pytest.mark.parametrize(("fmt", "layout"), COMBOS)
def test_discard_leaves_nothing(tmp_path: Path, fmt: str, layout: str) -> None:
    out = tmp_path / "r.out"
    w = OutputWriter(out, format=fmt, layout=layout, metadata={})  # type: ignore[arg-type]
    w.write(ranked(5, 3))
    info = w.close(commit=False)
    assert info["sha256"] is None
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="discarded"):
        w.close(commit=True)


def test_context_manager_discards_on_error(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    with (
        pytest.raises(RuntimeError),
        OutputWriter(out, format="csv", layout="long", metadata={}) as w,
    ):
        w.write(ranked(2, 2))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_commit_replaces_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    out.write_text("old\n")
    w = OutputWriter(out, format="jsonl", layout="long", metadata={})
    w.write(ranked(1, 1))
    assert out.read_text() == "old\n"
    w.close(commit=True)
    assert out.read_text().startswith('{"user_id":0')


def test_csv_nested_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the nested layout needs parquet or jsonl; received csv"):
        OutputWriter(tmp_path / "r.csv", format="csv", layout="nested", metadata={})
    with pytest.raises(ConfigError, match="unknown output format"):
        OutputWriter(tmp_path / "r.x", format="xml", layout="long", metadata={})  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_leftovers_cleaned(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    stale = tmp_path / f".{out.name}{TMP_MARK}deadbeef0000"
    stale.write_bytes(b"partial")
    other = tmp_path / f".other{TMP_MARK}deadbeef0000"
    other.write_bytes(b"keep")
    w = OutputWriter(out, format="parquet", layout="long", metadata={})
    assert not stale.exists() and other.exists()
    w.close(commit=False)


def test_os_errors_are_output_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=str(blocker)):
        OutputWriter(blocker / "r.csv", format="csv", layout="long", metadata={})
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        OutputWriter(folder, format="csv", layout="long", metadata={})


class _FullFile(io.RawIOBase):
    """A file whose writes fail as on a full disk."""

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize(("fmt", "layout"), [("csv", "long"), ("jsonl", "long")])
def test_disk_full_is_output_error(tmp_path: Path, fmt: str, layout: str) -> None:
    out = tmp_path / "r.out"
    w = OutputWriter(out, format=fmt, layout=layout, metadata={})  # type: ignore[arg-type]
    w._file.close()
    w._file = _FullFile()  # type: ignore[assignment]
    with pytest.raises(OutputError, match=rf"{out}: cannot write output \(.*no space left"):
        w.write(ranked(3, 2))
    assert list(tmp_path.iterdir()) == []
    w.close(commit=False)


def test_unwritable_folder(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match=str(folder)):
            OutputWriter(folder / "r.csv", format="csv", layout="long", metadata={})
    finally:
        folder.chmod(0o700)


# -- join_titles ---------------------------------------------------------------------------


def _ranked_ids(movie_ids: pa.Array) -> pa.Table:
    n = len(movie_ids)
    return pa.table(
        {
            "user_id": pa.array([2] * n, pa.int64()),
            "rank": pa.array(range(1, n + 1), pa.int32()),
            "movie_id": movie_ids,
            "stars": pa.array([4.5] * n, pa.float32()),
            "score": pa.array([0.9] * n, pa.float32()),
        }
    )


def test_join_titles_keeps_order_and_counts_missing() -> None:
    table = _ranked_ids(pa.array([30, 10, 20, 10, 99], pa.int64()))
    titles = pa.table(
        {
            "movie_id": pa.array([10, 20, 30, 10], pa.int32()),
            "title": ["Ten", 'Twenty, "2"', None, "Ten again"],
        }
    )
    out, missing = join_titles(table, titles)
    assert out.column_names == list(LONG_COLUMNS)
    assert out.schema.field("title").type == pa.string()
    assert out.schema.field("movie_id").type == pa.int64()
    assert out.column("movie_id").to_pylist() == [30, 10, 20, 10, 99]
    assert out.column("title").to_pylist() == [None, "Ten", 'Twenty, "2"', "Ten", None]
    assert out.column("rank").to_pylist() == [1, 2, 3, 4, 5]
    assert missing == 2


def test_join_titles_mixed_key_types_and_none() -> None:
    table = _ranked_ids(pa.array(["1", "x"], pa.string()))
    titles = pa.table({"movie_id": pa.array([1, 2], pa.int64()), "title": ["One", "Two"]})
    out, missing = join_titles(table, titles)
    assert out.column("title").to_pylist() == ["One", None] and missing == 1
    assert out.schema.field("movie_id").type == pa.string()
    out, missing = join_titles(table, None)
    assert out.column("title").to_pylist() == [None, None] and missing == 2
    assert out.column_names == list(LONG_COLUMNS)


def test_live_topk_spill_survives_leftover_cleaning(tmp_path: Path) -> None:
    """The writer's leftover cleaning may remove a live spill folder named like a temporary:
    spill files are anonymous, so the results survive, and nothing is left behind."""
    from batchrank.scoring.ranking import partial_topk
    from batchrank.scoring.topk import TopK

    rng = np.random.default_rng(1)
    n = 3_000
    u, m = rng.integers(0, 50, n), rng.integers(0, 40, n)
    score = ((u * 7 + m * 3) % 11).astype(np.float32) / 11
    scored = pa.table(
        {
            "user_id": pa.array(u, pa.int64()),
            "movie_id": pa.array(m, pa.int64()),
            "score": pa.array(score),
            "stars": pa.array(score * 5),
        }
    )
    out = tmp_path / "r.parquet"
    spill = tmp_path / f".{out.name}{TMP_MARK}spill-run1"
    tk = TopK(4, user_type=pa.int64(), item_type=pa.int64(), memory_budget_bytes=1, spill_dir=spill)
    for lo in range(0, n, 500):
        tk.add(scored.slice(lo, 500))
    assert tk.stats["spilled"] is True
    w = OutputWriter(out, format="parquet", layout="long", metadata={})
    assert not spill.exists()
    for t in tk.results():
        w.write(join_titles(t, None)[0])
    w.close(commit=True)
    tk.close()
    expected = partial_topk(scored, 4)
    got = pq.read_table(out)
    assert got.select(["user_id", "movie_id", "score", "stars"]).equals(expected)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
