"""Hostile inputs: ids at and beyond the int64 range, ambiguous columns, symlink loops."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrank
from batchrank.errors import DataError
from batchrank.scoring.discover import discover_inputs
from batchrank.scoring.ids import map_ids
from batchrank.scoring.reader import iter_chunks, validate_inputs
from batchrank.sources import load_ratings
from batchrank.vocab import Vocabulary, coerce_ids

COLS = {"user_col": "user_id", "item_col": "movie_id"}
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
I64_MAX, I64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def _mapped(path: Path, users: Vocabulary, items: Vocabulary):
    files = discover_inputs([path])
    validate_inputs(files, **COLS)
    (chunk,) = list(iter_chunks(files, chunk_rows=100, **COLS))
    return map_ids(chunk, users, items, unknown="skip")


# --- ids at the int64 limits --------------------------------------------------------------------


def test_19_digit_int64_ids_in_csv_are_ids(tmp_path: Path) -> None:
    users = Vocabulary.build(pa.array([I64_MIN, 7, I64_MAX], pa.int64()), where="u")
    items = Vocabulary.build(pa.array([1, 1_000_000_000_000_000_000], pa.int64()), where="i")
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "user_id,movie_id\n"
        f"{I64_MAX},1\n"
        f"{I64_MIN},1000000000000000000\n"
        f"+0{I64_MAX},1\n"  # sign and a leading zero, still in range
    )
    mapped = _mapped(csv, users, items)
    assert mapped.rejects is None
    assert mapped.table["user_id"].to_pylist() == [I64_MAX, I64_MIN, I64_MAX]
    assert mapped.table["u"].to_pylist() == [3, 1, 3]
    assert mapped.table["i"].to_pylist() == [1, 2, 1]


def test_ids_beyond_int64_in_csv_are_rejected_as_bad(tmp_path: Path) -> None:
    users = Vocabulary.build(pa.array([7], pa.int64()), where="u")
    items = Vocabulary.build(pa.array([1], pa.int64()), where="i")
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"user_id,movie_id\n{I64_MAX + 1},1\n{I64_MIN - 1},1\n7,{10**25}\n7,1\n")
    mapped = _mapped(csv, users, items)
    assert mapped.counts["rejected_bad_user_id"] == 2
    assert mapped.counts["rejected_bad_movie_id"] == 1
    assert mapped.counts["kept"] == 1
    assert mapped.rejects is not None
    assert mapped.rejects["reason"].to_pylist() == ["bad_user_id", "bad_user_id", "bad_movie_id"]
    assert mapped.rejects["user_id"].to_pylist()[0] == str(I64_MAX + 1)  # raw text kept


def test_uint64_parquet_ids_beyond_int64_are_rejected_not_wrapped(tmp_path: Path) -> None:
    users = Vocabulary.build(pa.array([5, 7], pa.int64()), where="u")
    items = Vocabulary.build(pa.array([1], pa.int64()), where="i")
    path = tmp_path / "pairs.parquet"
    big = 2**64 - 2  # as int64 it would wrap to -2
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([7, big, 2**63], pa.uint64()),
                "movie_id": pa.array([1, 1, 1], pa.uint64()),
            }
        ),
        path,
    )
    mapped = _mapped(path, users, items)
    assert mapped.table["user_id"].to_pylist() == [7]
    assert mapped.counts["rejected_bad_user_id"] == 2
    assert mapped.rejects is not None
    assert mapped.rejects["user_id"].to_pylist() == [str(big), str(2**63)]


def test_uint64_ids_beyond_int64_in_training_data_are_one_data_error(tmp_path: Path) -> None:
    path = tmp_path / "ratings.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([1, 2**64 - 1], pa.uint64()),
                "movie_id": pa.array([1, 2], pa.int64()),
                "rating": [4.0, 3.0],
            }
        ),
        path,
    )
    with pytest.raises(DataError, match=r"id 18446744073709551615 at row 2 is beyond the int64"):
        load_ratings(path)
    # the mask form for callers that reject rows, and no wrap either way
    cast, bad = coerce_ids(pa.array([1, 2**64 - 1], pa.uint64()), "int", where="w", overflow="bad")
    assert cast.to_pylist() == [1, None] and bad.tolist() == [False, True]


def test_score_rejects_ids_beyond_int64_end_to_end(sample_bundle: Path, tmp_path: Path) -> None:
    """Through the API: a 19-digit id beyond int64 is a counted reject, an in-range one that
    the model does not know is an unknown user; the known rows are scored."""
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "user_id,movie_id\n1000,1\n"
        f"{I64_MAX},1\n"  # valid id, not in the vocabulary
        f"{I64_MAX + 1},1\n"  # not an int64
    )
    manifest = batchrank.score(
        model=sample_bundle,
        pairs=[csv],
        out=tmp_path / "top.csv",
        rejects=tmp_path / "rejects.csv",
        max_reject_fraction=1.0,
    )
    counts = manifest["counts"]
    assert counts["rejected_by_reason"]["bad_user_id"] == 1
    assert counts["rows_skipped_unknown_user"] == 1
    assert str(I64_MAX + 1) in (tmp_path / "rejects.csv").read_text()


# --- duplicate column names ---------------------------------------------------------------------


def test_duplicate_parquet_id_column_is_ambiguous(tmp_path: Path) -> None:
    path = tmp_path / "dup.parquet"
    table = pa.Table.from_arrays(
        [pa.array([1]), pa.array([2]), pa.array([3])], names=["user_id", "movie_id", "user_id"]
    )
    pq.write_table(table, path)
    with pytest.raises(DataError) as e:
        validate_inputs(discover_inputs([path]), **COLS)
    assert str(e.value) == (
        f"{path.resolve()}: column `user_id` appears 2 times; ambiguous, expected one column "
        "of that name"
    )


def test_duplicate_csv_id_column_is_ambiguous(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("user_id,movie_id,movie_id\n1,2,3\n")
    with pytest.raises(DataError, match=r"dup\.csv: column `movie_id` appears 2 times; ambig"):
        validate_inputs(discover_inputs([path]), **COLS)


def test_duplicate_other_column_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_text("user_id,movie_id,x,x\n1,2,3,4\n")
    files = discover_inputs([path])
    validate_inputs(files, **COLS)
    (chunk,) = list(iter_chunks(files, chunk_rows=10, **COLS))
    assert chunk.table.to_pydict() == {"user_id": ["1"], "movie_id": ["2"]}


def test_duplicate_column_through_the_cli_is_exit_3(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchrank.cli.main import main

    path = tmp_path / "dup.csv"
    path.write_text("user_id,movie_id,user_id\n1000,1,1001\n")
    out = tmp_path / "out" / "top.csv"
    with pytest.raises(SystemExit) as e:
        main(["score", "--model", str(sample_bundle), "--pairs", str(path), "--out", str(out)])
    assert e.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "column `user_id` appears 2 times" in err[0]
    assert not out.parent.exists()


# --- symlink loops ------------------------------------------------------------------------------


def _finishes(fn, seconds: float = 30.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # re-raised below, in the test thread
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still walking after {seconds:g}s (a symlink loop?)"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]


def _looping_tree(root: Path) -> Path:
    data = root / "data"
    (data / "a" / "b").mkdir(parents=True)
    pq.write_table(pa.table({"user_id": [1], "movie_id": [2]}), data / "a" / "b" / "x.parquet")
    pq.write_table(pa.table({"user_id": [3], "movie_id": [4]}), data / "top.parquet")
    os.symlink("..", data / "a" / "b" / "up")  # b/up -> a
    os.symlink("../..", data / "a" / "b" / "up2")  # b/up2 -> data
    os.symlink(data, data / "a" / "self")
    return data


def test_folder_with_symlink_loops_is_walked_once(tmp_path: Path) -> None:
    data = _looping_tree(tmp_path)
    files = _finishes(lambda: discover_inputs([data]))
    assert sorted(f.path.name for f in files) == ["top.parquet", "x.parquet"]


def test_recursive_glob_with_symlink_loops_finishes(tmp_path: Path) -> None:
    data = _looping_tree(tmp_path)
    files = _finishes(lambda: discover_inputs([str(data / "**" / "*.parquet")]))
    assert sorted(f.path.name for f in files) == ["top.parquet", "x.parquet"]
    files = _finishes(lambda: discover_inputs([str(data / "**")]))
    assert sorted(f.path.name for f in files) == ["top.parquet", "x.parquet"]


def test_self_referencing_links_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    os.symlink(tmp_path / "in" / "b.csv", tmp_path / "in" / "a.csv")
    os.symlink(tmp_path / "in" / "a.csv", tmp_path / "in" / "b.csv")
    with pytest.raises(DataError, match=r"a\.csv: cannot read file"):
        _finishes(lambda: discover_inputs([tmp_path / "in"]))
