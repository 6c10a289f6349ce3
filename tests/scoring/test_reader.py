"""Tests for batchrank.scoring.reader: discovery, validation, chunked streaming, cross join."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrank.errors import DataError
from batchrank.scoring import reader
from batchrank.scoring.cross import iter_cross_join, read_user_subset
from batchrank.scoring.discover import discover_inputs
from batchrank.scoring.reader import (
    InputFile,
    chunk_work,
    iter_chunks,
    total_work,
    validate_inputs,
)

COLS = {"user_col": "user_id", "item_col": "movie_id"}


def write_parquet(path: Path, users, movies, *, row_group_size=None, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"user_id": users, "movie_id": movies, **extra})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def csv_text(users, movies, header="user_id,movie_id,rating") -> str:
    lines = [header] + [f"{u},{m},4" for u, m in zip(users, movies, strict=True)]
    return "\n".join(lines) + "\n"


def chunks_of(files, chunk_rows, **cols):
    return list(iter_chunks(files, chunk_rows=chunk_rows, **(cols or COLS)))


# ---------------------------------------------------------------------------------------------
# discover_inputs


def test_discover_single_files_and_metadata(tmp_path):
    p = write_parquet(tmp_path / "a.parquet", [1, 2, 3], [4, 5, 6])
    c = write_csv(tmp_path / "b.csv", csv_text([1], [2]))
    files = discover_inputs([c, str(p)])
    assert [f.path for f in files] == [p.resolve(), c.resolve()]
    assert [f.format for f in files] == ["parquet", "csv"]
    assert files[0].rows == 3
    assert files[1].rows is None
    assert files[1].size == c.stat().st_size
    m = files[0].to_manifest()
    assert set(m) == {"path", "format", "size_bytes", "mtime", "rows"}
    assert m["rows"] == 3 and m["size_bytes"] == p.stat().st_size and m["format"] == "parquet"
    assert m["mtime"].endswith("Z") and m["mtime"][:4].isdigit() and "T" in m["mtime"]


def test_discover_folder_recursive_skips_hidden_and_underscore(tmp_path):
    d = tmp_path / "data"
    a = write_parquet(d / "part-0.parquet", [1], [1])
    b = write_csv(d / "sub" / "part-1.csv", csv_text([1], [1]))
    c = write_csv(d / "sub" / "deeper" / "PART-2.CSV", csv_text([1], [1]))
    write_csv(d / "_SUCCESS", "")
    write_csv(d / "_meta.parquet", "x")
    write_csv(d / ".hidden.csv", "x")
    write_csv(d / ".cache" / "x.csv", "x")
    write_csv(d / "_temporary" / "y.parquet", "x")
    write_csv(d / "README.md", "notes")
    files = discover_inputs([d])
    assert [f.path for f in files] == sorted(p.resolve() for p in (a, b, c))
    assert {f.path.name: f.format for f in files}["PART-2.CSV"] == "csv"


def test_discover_glob_sorted_and_deduplicated(tmp_path):
    a = write_csv(tmp_path / "x" / "b.csv", csv_text([1], [1]))
    b = write_parquet(tmp_path / "x" / "a.parquet", [1], [1])
    c = write_csv(tmp_path / "y" / "c.csv", csv_text([1], [1]))
    rel = os.path.relpath(a, Path.cwd())
    files = discover_inputs(
        [str(tmp_path / "*" / "*.csv"), tmp_path / "x", a, rel, str(tmp_path / "?" / "[ab].*")]
    )
    assert [f.path for f in files] == sorted(p.resolve() for p in (a, b, c))


def test_discover_recursive_glob(tmp_path):
    a = write_csv(tmp_path / "1" / "2" / "a.csv", csv_text([1], [1]))
    files = discover_inputs([str(tmp_path / "**" / "*.csv")])
    assert [f.path for f in files] == [a.resolve()]


@pytest.mark.parametrize(
    ("setup", "spec", "message"),
    [
        (lambda d: None, "missing.csv", "missing.csv: no such file or folder"),
        (lambda d: None, "nothing-*.csv", "nothing-*.csv: pattern matches no files"),
        (
            lambda d: write_csv(d / "f" / "README.md", "x"),
            "f",
            "f: folder holds no .parquet or .csv files",
        ),
        (
            lambda d: write_csv(d / "data.json", "{}"),
            "data.json",
            "data.json: unknown file type '.json'; expected .parquet or .csv",
        ),
        (lambda d: write_csv(d / "empty.csv", ""), "empty.csv", "empty.csv: empty file"),
        (
            lambda d: write_csv(d / "f" / "empty.parquet", ""),
            "f",
            "empty.parquet: empty file",
        ),
    ],
)
def test_discover_errors(tmp_path, setup, spec, message):
    setup(tmp_path)
    with pytest.raises(DataError) as e:
        discover_inputs([str(tmp_path / spec)])
    text = str(e.value)
    assert text.endswith(message)
    assert "\n" not in text


def test_discover_no_specs():
    with pytest.raises(DataError, match="no input files"):
        discover_inputs([])


def test_discover_glob_with_unknown_extension_is_an_error(tmp_path):
    write_csv(tmp_path / "a.csv", csv_text([1], [1]))
    write_csv(tmp_path / "a.txt", "x")
    with pytest.raises(DataError, match=r"a\.txt: unknown file type '\.txt'"):
        discover_inputs([str(tmp_path / "a.*")])


# ---------------------------------------------------------------------------------------------
# validate_inputs


def test_validate_accepts_good_inputs(tmp_path):
    write_parquet(tmp_path / "a.parquet", ["u1", "u2"], [1, 2])
    write_csv(tmp_path / "b.csv", csv_text(["u3"], [3]))
    files = discover_inputs([tmp_path])
    assert validate_inputs(files, **COLS) is None
    # what was validated streams as it promised: both files, their ids, in file order
    ids = [(c.table["user_id"].to_pylist(), c.table["movie_id"].to_pylist()) for c in
           chunks_of(files, 10)]  # fmt: skip
    assert ids == [(["u1", "u2"], [1, 2]), (["u3"], ["3"])]
    # and validation does look at every file: one more without a movie column fails it
    write_csv(tmp_path / "c.csv", "user_id,item\n1,2\n")
    with pytest.raises(DataError, match=r"c\.csv: column `movie_id` missing"):
        validate_inputs(discover_inputs([tmp_path]), **COLS)


def test_validate_accepts_dictionary_string_ids(tmp_path):
    from batchrank.scoring.ids import map_ids
    from batchrank.vocab import Vocabulary

    users = pa.array(["a", "b", "a"]).dictionary_encode()
    write_parquet(tmp_path / "a.parquet", users, [1, 2, 1])
    files = discover_inputs([tmp_path])
    validate_inputs(files, **COLS)
    (chunk,) = chunks_of(files, 10)
    vocab_u = Vocabulary.build(pa.array(["a", "b"]), where="u")
    vocab_i = Vocabulary.build(pa.array([1, 2]), where="i")
    mapped = map_ids(chunk, vocab_u, vocab_i, unknown="fail")
    assert mapped.table["user_id"].to_pylist() == ["a", "b", "a"]
    assert mapped.table["u"].to_pylist() == [1, 2, 1]
    # a dictionary of another value type is not an id column
    floats = pa.array([1.5, 2.5]).dictionary_encode()
    write_parquet(tmp_path / "b.parquet", floats, [1, 2])
    with pytest.raises(DataError, match="ids must be integers or strings"):
        validate_inputs(discover_inputs([tmp_path / "b.parquet"]), **COLS)


def test_validate_csv_missing_column_lists_found(tmp_path):
    c = write_csv(tmp_path / "b.csv", "a,b\n1,2\n")
    with pytest.raises(DataError) as e:
        validate_inputs(discover_inputs([c]), **COLS)
    assert str(e.value) == f"{c.resolve()}: column `user_id`, `movie_id` missing; found `a`, `b`"


def test_validate_csv_one_missing_column(tmp_path):
    c = write_csv(tmp_path / "b.csv", "user_id,item\n1,2\n")
    with pytest.raises(DataError) as e:
        validate_inputs(discover_inputs([c]), **COLS)
    assert str(e.value).endswith(": column `movie_id` missing; found `user_id`, `item`")


def test_validate_csv_with_other_header_names(tmp_path):
    c = write_csv(tmp_path / "b.csv", "uid,iid\n1,2\n3,4\n")
    files = discover_inputs([c])
    validate_inputs(files, user_col="uid", item_col="iid")
    (chunk,) = chunks_of(files, 10, user_col="uid", item_col="iid")
    assert chunk.table.column_names == ["user_id", "movie_id"]
    assert chunk.table.column("user_id").to_pylist() == ["1", "3"]
    assert chunk.source_columns == ("uid", "iid")


def test_validate_csv_header_with_bom_and_quotes(tmp_path):
    c = tmp_path / "b.csv"
    c.write_bytes(b'\xef\xbb\xbf"user_id","movie_id"\n1,2\n')
    assert reader.csv_header(c) == ["user_id", "movie_id"]  # no BOM, no quotes in the names
    files = discover_inputs([c])
    validate_inputs(files, **COLS)
    (chunk,) = chunks_of(files, 10)
    assert chunk.table.to_pydict() == {"user_id": ["1"], "movie_id": ["2"]}


def test_validate_parquet_missing_column(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"user": [1], "movie_id": [2]}), p)
    with pytest.raises(DataError) as e:
        validate_inputs(discover_inputs([p]), **COLS)
    assert str(e.value) == f"{p.resolve()}: column `user_id` missing; found `user`, `movie_id`"


def test_validate_truncated_parquet(tmp_path):
    p = write_parquet(tmp_path / "a.parquet", list(range(1000)), list(range(1000)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    files = discover_inputs([p])
    assert files[0].rows is None
    with pytest.raises(DataError) as e:
        validate_inputs(files, **COLS)
    assert str(e.value).startswith(f"{p.resolve()}: not a readable Parquet file (")
    assert "\n" not in str(e.value)


def test_validate_float_id_column(tmp_path):
    p = write_parquet(tmp_path / "a.parquet", [1.0, 2.0], [1, 2])
    with pytest.raises(DataError) as e:
        validate_inputs(discover_inputs([p]), **COLS)
    assert str(e.value) == (
        f"{p.resolve()}: column `user_id`: ids must be integers or strings; received type double"
    )


def test_validate_checks_every_file_before_work(tmp_path):
    write_parquet(tmp_path / "a.parquet", [1], [1])
    bad = write_csv(tmp_path / "z.csv", "x,y\n1,2\n")
    with pytest.raises(DataError, match=str(bad.resolve())):
        validate_inputs(discover_inputs([tmp_path]), **COLS)


# ---------------------------------------------------------------------------------------------
# iter_chunks


def test_chunks_exact_sizes_and_first_rows_across_files(tmp_path):
    a = write_parquet(tmp_path / "a.parquet", np.arange(10), np.arange(10) + 100, row_group_size=3)
    b = write_csv(tmp_path / "b.csv", csv_text(range(7), range(200, 207)))
    c = write_parquet(tmp_path / "c.parquet", np.arange(4), np.arange(4))
    files = discover_inputs([a, b, c])
    chunks = chunks_of(files, 4)
    assert [(ch.file_index, ch.first_row, ch.table.num_rows) for ch in chunks] == [
        (0, 1, 4),
        (0, 5, 4),
        (0, 9, 2),
        (1, 1, 4),
        (1, 5, 3),
        (2, 1, 4),
    ]
    assert [ch.path for ch in chunks] == [files[i].path for i in (0, 0, 0, 1, 1, 2)]
    assert chunks[1].table.column("movie_id").to_pylist() == [104, 105, 106, 107]
    assert chunks[4].table.column("user_id").to_pylist() == ["4", "5", "6"]
    assert chunks[4].table.schema.field("movie_id").type == pa.string()
    for ch in chunks:
        assert ch.table.column_names == ["user_id", "movie_id"]


def test_chunks_larger_than_files(tmp_path):
    a = write_csv(tmp_path / "a.csv", csv_text([1, 2], [3, 4]))
    (chunk,) = chunks_of(discover_inputs([a]), 1000)
    assert chunk.table.num_rows == 2 and chunk.first_row == 1


def test_chunks_of_one_row(tmp_path):
    a = write_csv(tmp_path / "a.csv", csv_text([1, 2, 3], [3, 4, 5]))
    chunks = chunks_of(discover_inputs([a]), 1)
    assert [ch.first_row for ch in chunks] == [1, 2, 3]
    assert [ch.table.column("user_id")[0].as_py() for ch in chunks] == ["1", "2", "3"]


def test_header_only_csv_yields_nothing(tmp_path):
    a = write_csv(tmp_path / "a.csv", "user_id,movie_id\n")
    assert chunks_of(discover_inputs([a]), 5) == []


def test_csv_ids_are_strings_and_empty_is_null(tmp_path):
    a = write_csv(tmp_path / "a.csv", 'user_id,movie_id\n1,abc\n,7\n"x,y",NA\n')
    (chunk,) = chunks_of(discover_inputs([a]), 10)
    assert chunk.table.column("user_id").to_pylist() == ["1", None, "x,y"]
    assert chunk.table.column("movie_id").to_pylist() == ["abc", "7", "NA"]


def test_csv_wrong_field_count_names_file_and_row(tmp_path):
    a = write_csv(tmp_path / "a.csv", "user_id,movie_id,rating\n1,2,3\n4,5,6\n7,8,9,10\n1,1,1\n")
    with pytest.raises(DataError) as e:
        chunks_of(discover_inputs([a]), 10)
    assert str(e.value) == f"{a.resolve()} row 3: expected 3 fields, found 4 ('7,8,9,10')"


def test_csv_wrong_field_count_late_in_a_big_file(tmp_path):
    n = 150_000
    body = "".join(f"{i},{i}\n" for i in range(n))
    a = write_csv(tmp_path / "a.csv", "user_id,movie_id\n" + body + "1\n" + body)
    seen = 0
    with pytest.raises(DataError) as e:
        for ch in iter_chunks(discover_inputs([a]), chunk_rows=10_000, **COLS):
            seen += ch.table.num_rows
    assert str(e.value).startswith(f"{a.resolve()} row {n + 1}: expected 2 fields, found 1")
    assert 0 < seen < n


def test_corrupt_parquet_data_names_file(tmp_path):
    rng = np.random.default_rng(0)
    p = write_parquet(tmp_path / "a.parquet", rng.integers(0, 10**9, 5000), np.arange(5000))
    data = bytearray(p.read_bytes())
    for k in range(8, len(data) // 2):
        data[k] = (data[k] * 31 + 7) % 256
    p.write_bytes(bytes(data))
    files = discover_inputs([p])
    validate_inputs(files, **COLS)  # the footer is intact
    with pytest.raises(DataError) as e:
        chunks_of(files, 1000)
    assert str(e.value).startswith(f"{p.resolve()}: cannot read parquet data (")


def test_truncated_parquet_while_streaming(tmp_path):
    p = write_parquet(tmp_path / "a.parquet", np.arange(100), np.arange(100))
    files = discover_inputs([p])
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 20])
    with pytest.raises(DataError, match=r"a\.parquet: not a readable Parquet file"):
        chunks_of(files, 10)


def test_chunk_rows_must_be_positive(tmp_path):
    a = write_csv(tmp_path / "a.csv", csv_text([1], [1]))
    with pytest.raises(ValueError):
        chunks_of(discover_inputs([a]), 0)


def _frame_of(path: Path, fmt: str) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(path).select(["user_id", "movie_id"])
    import pyarrow.csv as pacsv

    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            include_columns=["user_id", "movie_id"],
            column_types={"user_id": pa.string(), "movie_id": pa.string()},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=0, max_value=60),
    chunk_rows=st.integers(min_value=1, max_value=70),
    row_group=st.integers(min_value=1, max_value=25),
    fmt=st.sampled_from(["parquet", "csv"]),
)
def test_chunks_concatenate_to_the_file(n, chunk_rows, row_group, fmt):
    with tempfile.TemporaryDirectory() as d:
        users = [f"u{(k * 7) % 13}" for k in range(n)]
        movies = list(range(n))
        if fmt == "parquet":
            path = write_parquet(Path(d) / "f.parquet", users, movies, row_group_size=row_group)
        else:
            path = write_csv(Path(d) / "f.csv", csv_text(users, movies))
        (file,) = discover_inputs([path])
        chunks = chunks_of([file], chunk_rows)
        sizes = [ch.table.num_rows for ch in chunks]
        assert all(s == chunk_rows for s in sizes[:-1])
        assert sum(sizes) == n
        assert [ch.first_row for ch in chunks] == list(np.cumsum([1, *sizes[:-1]]))[: len(sizes)]
        expected = _frame_of(path, fmt)
        got = pa.concat_tables([ch.table for ch in chunks]) if chunks else None
        if n:
            assert got is not None and got.equals(expected.rename_columns(got.column_names))
        # progress adds up exactly in bytes, and in rows where rows are known
        assert sum(chunk_work(ch, file, "bytes") for ch in chunks) == (file.size if n else 0)
        if fmt == "parquet":
            assert sum(chunk_work(ch, file) for ch in chunks) == n


# ---------------------------------------------------------------------------------------------
# total_work / chunk_work


def test_total_work_rows_when_all_parquet(tmp_path):
    write_parquet(tmp_path / "a.parquet", np.arange(5), np.arange(5))
    write_parquet(tmp_path / "b.parquet", np.arange(3), np.arange(3))
    files = discover_inputs([tmp_path])
    assert total_work(files) == (8, "rows")
    chunks = chunks_of(files, 2)
    assert sum(chunk_work(ch, files[ch.file_index], "rows") for ch in chunks) == 8


def test_total_work_bytes_when_any_csv(tmp_path):
    write_parquet(tmp_path / "a.parquet", np.arange(5), np.arange(5))
    write_csv(tmp_path / "b.csv", csv_text(range(50), range(50)))
    files = discover_inputs([tmp_path])
    total, unit = total_work(files)
    assert unit == "bytes" and total == sum(f.size for f in files)
    chunks = chunks_of(files, 7)
    work = [chunk_work(ch, files[ch.file_index], unit) for ch in chunks]
    assert sum(work) == total
    assert all(w >= 0 for w in work)
    # without a unit, a CSV chunk counts bytes
    assert chunk_work(chunks[-1], files[1]) == chunks[-1].nbytes


def test_csv_progress_is_spread_over_a_big_file(tmp_path):
    n = 300_000
    a = write_csv(tmp_path / "a.csv", csv_text(range(n), range(n)))
    (file,) = discover_inputs([a])
    work = [chunk_work(ch, file) for ch in iter_chunks([file], chunk_rows=20_000, **COLS)]
    assert sum(work) == file.size
    # every chunk moves the bar by roughly its share (within a factor of two)
    share = file.size / len(work)
    assert all(share / 2 < w < share * 2 for w in work[:-1])


# ---------------------------------------------------------------------------------------------
# cross join


def test_cross_join_every_pair_once_user_major():
    users = pa.array([30, 10, 20], pa.int64())
    items = pa.array(["a", "b", "c", "d", "e"])
    chunks = list(iter_cross_join(users, 5, items, chunk_rows=4))
    assert [ch.table.num_rows for ch in chunks] == [4, 4, 4, 3]
    assert [ch.first_row for ch in chunks] == [1, 5, 9, 13]
    assert all(ch.path == Path("<all>") and ch.file_index == 0 for ch in chunks)
    t = pa.concat_tables([ch.table for ch in chunks])
    pairs = list(
        zip(t.column("user_id").to_pylist(), t.column("movie_id").to_pylist(), strict=True)
    )
    assert pairs == [(u, m) for u in [30, 10, 20] for m in "abcde"]
    assert t.schema.field("user_id").type == pa.int64()
    assert t.column_names == ["user_id", "movie_id"]


def test_cross_join_with_indices():
    users = pa.array(["x", "y"])
    items = pa.array([5, 6, 7], pa.int64())
    chunks = list(
        iter_cross_join(
            users,
            3,
            items,
            chunk_rows=2,
            user_index=np.array([1, 0]),
            item_index=np.arange(1, 4),
        )
    )
    t = pa.concat_tables([ch.table for ch in chunks])
    assert t.column_names == ["user_id", "movie_id", "u", "i"]
    assert t.schema.field("u").type == pa.int32()
    assert t.column("u").to_pylist() == [1, 1, 1, 0, 0, 0]
    assert t.column("i").to_pylist() == [1, 2, 3, 1, 2, 3]


def test_cross_join_checks_arguments():
    users, items = pa.array([1]), pa.array([1, 2])
    with pytest.raises(ValueError):
        list(iter_cross_join(users, 3, items, chunk_rows=2))
    with pytest.raises(ValueError):
        list(iter_cross_join(users, 2, items, chunk_rows=0))
    with pytest.raises(ValueError):
        list(iter_cross_join(users, 2, items, chunk_rows=2, user_index=np.array([1])))
    assert list(iter_cross_join(pa.array([], pa.int64()), 2, items, chunk_rows=2)) == []


def test_cross_join_is_lazy():
    users = pa.array(np.arange(1_000_000))
    items = pa.array(np.arange(1_000_000))
    first = next(iter(iter_cross_join(users, len(items), items, chunk_rows=3)))
    assert first.table.column("movie_id").to_pylist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# read_user_subset


def test_user_subset_csv_and_parquet(tmp_path):
    c = write_csv(tmp_path / "u.csv", "user_id,other\n3,x\n1,y\n3,z\n")
    assert read_user_subset(c).to_pylist() == ["3", "1"]
    assert read_user_subset(c, kind="int").to_pylist() == [3, 1]
    p = tmp_path / "u.parquet"
    pq.write_table(pa.table({"uid": pa.array(["b", "a"]).dictionary_encode()}), p)
    got = read_user_subset(p, "uid")
    assert got.type == pa.string() and got.to_pylist() == ["b", "a"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("u.csv", "id\n1\n", "column `user_id` missing; found `id`"),
        ("u.csv", "user_id\n1\n\n2\n", None),
        ("u.csv", "user_id,x\n1,a\n,b\n", "row 2: missing user id in column `user_id`"),
        ("u.csv", "user_id,x\n1,a\nabc,b\n", "row 2: bad user id 'abc'; expected an integer"),
        ("u.csv", "user_id\n", "no user ids in column `user_id`"),
        ("u.csv", "", "empty file"),
        ("u.txt", "user_id\n1\n", "unknown file type '.txt'"),
    ],
)
def test_user_subset_errors(tmp_path, name, content, message):
    path = write_csv(tmp_path / name, content)
    if message is None:  # blank lines are skipped
        assert read_user_subset(path, kind="int").to_pylist() == [1, 2]
        return
    with pytest.raises(DataError) as e:
        read_user_subset(path, kind="int")
    assert message in str(e.value)


def test_user_subset_float_ids(tmp_path):
    p = tmp_path / "u.parquet"
    pq.write_table(pa.table({"user_id": [1.5]}), p)
    with pytest.raises(DataError, match="ids must be integers or strings; received type double"):
        read_user_subset(p)


def test_user_subset_folder_is_an_error(tmp_path):
    write_csv(tmp_path / "d" / "a.csv", "user_id\n1\n")
    write_csv(tmp_path / "d" / "b.csv", "user_id\n2\n")
    with pytest.raises(DataError, match=r"expected one \.csv or \.parquet file"):
        read_user_subset(tmp_path / "d")


def test_input_file_is_frozen(tmp_path):
    f = InputFile(path=tmp_path, format="csv", size=1, mtime=0.0, rows=None)
    with pytest.raises(AttributeError):
        f.size = 2  # type: ignore[misc]
    assert f.to_manifest()["mtime"] == "1970-01-01T00:00:00Z"
    assert str(reader.ALL_PAIRS_PATH) == "<all>"
