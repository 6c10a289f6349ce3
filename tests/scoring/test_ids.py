"""Tests for batchrank.scoring.ids: casting, rejects, vocabulary lookup, unknown-id policies."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.errors import DataError
from batchrank.scoring.cross import iter_cross_join
from batchrank.scoring.discover import discover_inputs
from batchrank.scoring.ids import (
    COUNT_KEYS,
    REJECTS_SCHEMA,
    empty_counts,
    map_ids,
)
from batchrank.scoring.reader import RawChunk, iter_chunks
from batchrank.scoring.rejects import RejectsWriter
from batchrank.vocab import Vocabulary

USERS = Vocabulary.build(pa.array([10, 20, 30]), where="t")
ITEMS = Vocabulary.build(pa.array([1, 2, 3, 4]), where="t")
SUSERS = Vocabulary.build(pa.array(["alice", "bob"]), where="t")
SITEMS = Vocabulary.build(pa.array(["m1", "m2"]), where="t")


def raw(users, movies, *, first_row=1, path="in.csv", utype=None, itype=None) -> RawChunk:
    table = pa.table(
        {
            "user_id": pa.array(users, type=utype or pa.string()),
            "movie_id": pa.array(movies, type=itype or pa.string()),
        }
    )
    return RawChunk(table=table, file_index=0, path=Path(path), first_row=first_row)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    assert set(counts) == set(COUNT_KEYS)
    return {k: v for k, v in counts.items() if v}


def test_clean_string_ids_for_integer_vocabularies():
    m = map_ids(raw(["10", " 20 ", "+30"], ["4", "1", "2"]), USERS, ITEMS, unknown="fail")
    assert m.rejects is None
    assert m.table.column_names == ["user_id", "movie_id", "u", "i"]
    assert m.table.schema.field("user_id").type == pa.int64()
    assert m.table.schema.field("u").type == pa.int32()
    assert m.table.column("user_id").to_pylist() == [10, 20, 30]
    assert m.table.column("u").to_pylist() == [1, 2, 3]
    assert m.table.column("i").to_pylist() == [4, 1, 2]
    assert nonzero(m.counts) == {"read": 3, "kept": 3}


def test_integer_ids_for_string_vocabularies_are_cast():
    vocab = Vocabulary.build(pa.array(["10", "20"]), where="t")
    chunk = raw([10, 20], ["m2", "m1"], utype=pa.int64())
    m = map_ids(chunk, vocab, SITEMS, unknown="fail")
    assert m.table.column("user_id").to_pylist() == ["10", "20"]
    assert m.table.column("u").to_pylist() == [1, 2]
    assert m.table.column("i").to_pylist() == [2, 1]


def test_parquet_typed_and_dictionary_ids():
    users = pa.array(["bob", "alice", "bob"]).dictionary_encode()
    chunk = RawChunk(
        table=pa.table({"user_id": users, "movie_id": ["m1", "m1", "m2"]}),
        file_index=0,
        path=Path("a.parquet"),
        first_row=1,
    )
    m = map_ids(chunk, SUSERS, SITEMS, unknown="fail")
    assert m.table.column("user_id").to_pylist() == ["bob", "alice", "bob"]
    assert m.table.column("u").to_pylist() == [2, 1, 2]


def test_rejects_nulls_and_bad_ids_with_row_numbers():
    chunk = raw(
        ["10", None, "abc", "20", "1.5", "30", None, "10"],
        ["1", "2", "3", None, "4", "x", "zz", "2"],
        first_row=101,
        path="data/pairs.csv",
    )
    m = map_ids(chunk, USERS, ITEMS, unknown="fail")
    assert m.table.column("user_id").to_pylist() == [10, 10]
    assert m.table.column("movie_id").to_pylist() == [1, 2]
    assert m.rejects is not None
    assert m.rejects.schema == REJECTS_SCHEMA
    assert m.rejects.to_pylist() == [
        {"file": "data/pairs.csv", "row": 102, "user_id": None, "movie_id": "2",
         "reason": "null_user_id"},
        {"file": "data/pairs.csv", "row": 103, "user_id": "abc", "movie_id": "3",
         "reason": "bad_user_id"},
        {"file": "data/pairs.csv", "row": 104, "user_id": "20", "movie_id": None,
         "reason": "null_movie_id"},
        {"file": "data/pairs.csv", "row": 105, "user_id": "1.5", "movie_id": "4",
         "reason": "bad_user_id"},
        {"file": "data/pairs.csv", "row": 106, "user_id": "30", "movie_id": "x",
         "reason": "bad_movie_id"},
        {"file": "data/pairs.csv", "row": 107, "user_id": None, "movie_id": "zz",
         "reason": "null_user_id"},
    ]  # fmt: skip
    assert nonzero(m.counts) == {
        "read": 8,
        "rejected_null_user_id": 2,
        "rejected_bad_user_id": 2,
        "rejected_null_movie_id": 1,
        "rejected_bad_movie_id": 1,
        "kept": 2,
    }


def test_float_id_column_is_an_error():
    chunk = raw([1.0, 2.0], ["1", "2"], utype=pa.float64(), path="x.parquet")
    chunk.source_columns = ("uid", "movie_id")
    with pytest.raises(DataError) as e:
        map_ids(chunk, USERS, ITEMS, unknown="skip")
    assert str(e.value) == (
        "x.parquet: column `uid`: ids must be integers or strings; received type double"
    )


UNKNOWN_CHUNK = (
    ["10", "99", "20", "98", "30"],
    ["1", "2", "77", "78", "4"],
)


def test_unknown_skip():
    m = map_ids(raw(*UNKNOWN_CHUNK), USERS, ITEMS, unknown="skip")
    assert m.table.column("user_id").to_pylist() == [10, 30]
    assert m.table.column("i").to_pylist() == [1, 4]
    # row 4 is unknown in both: counted once, as unknown_user
    assert nonzero(m.counts) == {"read": 5, "unknown_user": 2, "unknown_movie": 1, "kept": 2}
    assert m.rejects is None


def test_unknown_oov():
    m = map_ids(raw(*UNKNOWN_CHUNK), USERS, ITEMS, unknown="oov")
    assert m.table.column("user_id").to_pylist() == [10, 99, 20, 98, 30]
    assert m.table.column("u").to_pylist() == [1, 0, 2, 0, 3]
    assert m.table.column("i").to_pylist() == [1, 2, 0, 0, 4]
    assert nonzero(m.counts) == {"read": 5, "oov_user": 2, "oov_movie": 2, "kept": 5}


def test_unknown_fail_names_file_row_and_id():
    with pytest.raises(DataError) as e:
        map_ids(raw(*UNKNOWN_CHUNK, first_row=11, path="p.csv"), USERS, ITEMS, unknown="fail")
    assert str(e.value) == (
        "p.csv row 12: unknown user id 99 (not in the model's vocabulary; --unknown fail)"
    )


def test_unknown_fail_movie_after_rejected_rows():
    chunk = raw(["abc", "10"], ["1", "9"], first_row=1, path="p.csv")
    with pytest.raises(DataError) as e:
        map_ids(chunk, USERS, ITEMS, unknown="fail")
    assert str(e.value).startswith("p.csv row 2: unknown movie id 9 (")


def test_unknown_fail_string_id_is_quoted():
    with pytest.raises(DataError, match=r"row 1: unknown user id 'carol' \("):
        map_ids(raw(["carol"], ["m1"]), SUSERS, SITEMS, unknown="fail")


def test_bad_unknown_policy():
    with pytest.raises(ValueError):
        map_ids(raw(["10"], ["1"]), USERS, ITEMS, unknown="maybe")  # type: ignore[arg-type]


def test_all_rows_rejected_and_empty_chunk():
    m = map_ids(raw(["x", None], ["1", "2"]), USERS, ITEMS, unknown="skip")
    assert m.table.num_rows == 0
    assert m.table.schema.field("user_id").type == pa.int64()
    assert nonzero(m.counts) == {"read": 2, "rejected_bad_user_id": 1, "rejected_null_user_id": 1}
    m = map_ids(raw([], []), USERS, ITEMS, unknown="fail")
    assert m.table.num_rows == 0 and m.rejects is None
    assert nonzero(m.counts) == {}


def test_precomputed_indices_from_cross_join():
    users = pa.array([20, 99], pa.int64())
    user_index = USERS.lookup(users)
    chunks = list(
        iter_cross_join(
            users,
            len(ITEMS),
            ITEMS.ids,
            chunk_rows=3,
            user_index=user_index,
            item_index=np.arange(1, len(ITEMS) + 1),
        )
    )
    mapped = [map_ids(ch, USERS, ITEMS, unknown="skip") for ch in chunks]
    t = pa.concat_tables([m.table for m in mapped])
    assert t.column("user_id").to_pylist() == [20] * 4
    assert t.column("i").to_pylist() == [1, 2, 3, 4]
    assert sum(m.counts["unknown_user"] for m in mapped) == 4
    with pytest.raises(DataError, match=r"<all> row 5: unknown user id 99"):
        for ch in chunks:
            map_ids(ch, USERS, ITEMS, unknown="fail")


def test_cross_join_without_indices_goes_through_lookup():
    chunks = iter_cross_join(pa.array(["bob"]), 2, SITEMS.ids, chunk_rows=5)
    (m,) = [map_ids(ch, SUSERS, SITEMS, unknown="fail") for ch in chunks]
    assert m.table.column("u").to_pylist() == [2, 2]
    assert m.table.column("i").to_pylist() == [1, 2]


def test_csv_file_with_bad_ids_end_to_end(tmp_path):
    path = tmp_path / "pairs.csv"
    rows = ["10,1", "abc,2", "20,", "30,3", "20,xyz", "10,4", ",1"]
    path.write_text("user_id,movie_id\n" + "\n".join(rows) + "\n")
    files = discover_inputs([path])
    mapped = [
        map_ids(ch, USERS, ITEMS, unknown="skip")
        for ch in iter_chunks(files, user_col="user_id", item_col="movie_id", chunk_rows=3)
    ]
    rejects = pa.concat_tables([m.rejects for m in mapped if m.rejects is not None])
    assert rejects.column("row").to_pylist() == [2, 3, 5, 7]
    assert rejects.column("reason").to_pylist() == [
        "bad_user_id",
        "null_movie_id",
        "bad_movie_id",
        "null_user_id",
    ]
    assert set(rejects.column("file").to_pylist()) == {str(path.resolve())}
    kept = pa.concat_tables([m.table for m in mapped])
    assert kept.column("user_id").to_pylist() == [10, 30, 10]
    total = empty_counts()
    for m in mapped:
        for k, v in m.counts.items():
            total[k] += v
    assert total["read"] == 7 and total["kept"] == 3


def test_parquet_file_with_null_ids(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"uid": pa.array([10, None, 30]), "mid": [1, 2, None]}), path)
    files = discover_inputs([path])
    (ch,) = iter_chunks(files, user_col="uid", item_col="mid", chunk_rows=10)
    m = map_ids(ch, USERS, ITEMS, unknown="fail")
    assert m.rejects is not None
    assert m.rejects.to_pydict()["user_id"] == [None, "30"]
    assert m.rejects.to_pydict()["reason"] == ["null_user_id", "null_movie_id"]
    assert m.table.column("u").to_pylist() == [1]


def test_rejects_from_map_ids_round_trip(tmp_path):
    m = map_ids(raw(["x", "10"], ["1", None], first_row=5), USERS, ITEMS, unknown="skip")
    target = tmp_path / "r.csv"
    with RejectsWriter(target) as w:
        w.write(m.rejects)
    with target.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"file": "in.csv", "row": "5", "user_id": "x", "movie_id": "1", "reason": "bad_user_id"},
        {"file": "in.csv", "row": "6", "user_id": "10", "movie_id": "", "reason": "null_movie_id"},
    ]
