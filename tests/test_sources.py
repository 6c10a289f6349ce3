"""Training data sources (MovieLens folder / zip, CSV, Parquet, tfds) and their bad inputs."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from batchrank.errors import DataError
from batchrank.sources import Columns, RatingsData, fingerprint_table, load_items, load_ratings

if TYPE_CHECKING:  # tests/scoring has a conftest too: import it for types only
    from conftest import TinyData

SCHEMA_INT = pa.schema(
    [("user_id", pa.int64()), ("movie_id", pa.int64()), ("rating", pa.float64())]
)

U_DATA = [
    (196, 242, 3, 881250949),
    (186, 302, 3, 891717742),
    (22, 377, 1, 878887116),
    (244, 51, 2, 880606923),
    (166, 346, 1, 886397596),
    (298, 474, 4, 884182806),
    (196, 51, 5, 881251000),
]
U_ITEM = [
    (242, "Kolya (1996)"),
    (302, "L.A. Confidential (1997)"),
    (377, "Heavyweights (1994)"),
    (51, "Légends of the Fall (1994)"),  # é: one byte 0xE9 in ISO-8859-1, invalid UTF-8
    (346, "Jackie Brown (1997)"),
    (474, "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1963)"),
]


def u_data_bytes(rows: list[tuple[int, int, int, int]] = U_DATA) -> bytes:
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows).encode()


def u_item_bytes(items: list[tuple[int, str]] = U_ITEM) -> bytes:
    lines = [f"{i}|{title}|01-Jan-1995||http://us.imdb.com/x|0|0|1|0\n" for i, title in items]
    return "".join(lines).encode("iso-8859-1")


def make_movielens_dir(folder: Path, *, data: bytes | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "u.data").write_bytes(u_data_bytes() if data is None else data)
    (folder / "u.item").write_bytes(u_item_bytes())
    (folder / "README").write_text("MovieLens 100K, abridged\n")
    return folder


def make_movielens_zip(path: Path, *, data: bytes | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", u_data_bytes() if data is None else data)
        zf.writestr("ml-100k/u.item", u_item_bytes())
        zf.writestr("ml-100k/README", "MovieLens 100K, abridged\n")
    return path


def _check_movielens(data: RatingsData) -> None:
    assert data.ratings.schema == SCHEMA_INT
    assert data.ratings.num_rows == len(U_DATA)
    assert data.ratings.column("user_id").to_pylist() == [r[0] for r in U_DATA]
    assert data.ratings.column("movie_id").to_pylist() == [r[1] for r in U_DATA]
    assert data.ratings.column("rating").to_pylist() == [float(r[2]) for r in U_DATA]
    assert data.items is not None
    titles = dict(
        zip(
            data.items.column("movie_id").to_pylist(),
            data.items.column("title").to_pylist(),
            strict=True,
        )
    )
    assert titles[51] == "Légends of the Fall (1994)"  # decoded as ISO-8859-1, not mangled
    assert titles[474].startswith("Dr. Strangelove or: How I Learned")
    assert len(titles) == len(U_ITEM)


# --- MovieLens ----------------------------------------------------------------------------------


def test_movielens_folder(tmp_path: Path) -> None:
    folder = make_movielens_dir(tmp_path / "ml-100k")
    data = load_ratings(folder)
    _check_movielens(data)
    assert str(folder) in data.source


def test_movielens_zip(tmp_path: Path) -> None:
    path = make_movielens_zip(tmp_path / "ml-100k.zip")
    data = load_ratings(path)
    _check_movielens(data)
    # the same ratings, hence the same fingerprint, as the folder
    folder = make_movielens_dir(tmp_path / "ml-100k")
    assert data.fingerprint == load_ratings(folder).fingerprint


def test_movielens_folder_without_u_item_has_no_titles(tmp_path: Path) -> None:
    folder = make_movielens_dir(tmp_path / "ml")
    (folder / "u.item").unlink()
    data = load_ratings(folder)
    assert data.items is None
    assert data.ratings.num_rows == len(U_DATA)


def test_items_file_overrides_movielens_titles(tmp_path: Path) -> None:
    folder = make_movielens_dir(tmp_path / "ml")
    items = tmp_path / "titles.csv"
    pl.DataFrame({"movie_id": [242], "title": ["Kolya, the other title"]}).write_csv(items)
    data = load_ratings(folder, items=items)
    assert data.items is not None
    assert data.items.to_pylist() == [{"movie_id": 242, "title": "Kolya, the other title"}]


# --- generic files ------------------------------------------------------------------------------


def test_parquet_ratings(tiny_ratings: TinyData) -> None:
    data = load_ratings(tiny_ratings.ratings)
    assert data.ratings.schema == SCHEMA_INT
    assert data.ratings.num_rows == tiny_ratings.frame.height
    assert data.items is None
    expected = tiny_ratings.frame.select("user_id", "movie_id", pl.col("rating").cast(pl.Float64))
    assert data.ratings.equals(expected.to_arrow())


def test_csv_with_custom_column_names(tmp_path: Path) -> None:
    path = tmp_path / "my ratings.csv"
    path.write_text("who,what,stars,extra\n7,100,4.5,x\n9,100,2,y\n7,300,5,z\n")
    cols = Columns(user="who", item="what", rating="stars")
    data = load_ratings(path, columns=cols)
    assert data.ratings.schema == SCHEMA_INT
    assert data.ratings.to_pylist() == [
        {"user_id": 7, "movie_id": 100, "rating": 4.5},
        {"user_id": 9, "movie_id": 100, "rating": 2.0},
        {"user_id": 7, "movie_id": 300, "rating": 5.0},
    ]


def test_parquet_with_custom_column_names_and_items_file(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pl.DataFrame({"u": [1, 2], "m": [5, 6], "score": [1.0, 2.0]}).write_parquet(path)
    items = tmp_path / "movies.parquet"
    pl.DataFrame({"m": [5, 6, 6], "name": ["Five", "Six", "Six again"]}).write_parquet(items)
    cols = Columns(user="u", item="m", rating="score", title="name")
    data = load_ratings(path, columns=cols, items=items)
    assert data.ratings.column("movie_id").to_pylist() == [5, 6]
    assert data.items is not None
    # one title per movie: the first given
    assert data.items.to_pylist() == [
        {"movie_id": 5, "title": "Five"},
        {"movie_id": 6, "title": "Six"},
    ]


def test_items_file_with_tricky_titles(tiny_ratings: TinyData) -> None:
    items = load_items(tiny_ratings.items)
    got = dict(
        zip(items.column("movie_id").to_pylist(), items.column("title").to_pylist(), strict=True)
    )
    assert got == tiny_ratings.titles


def test_string_ids(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "user_id,movie_id,rating\nalice,tt0111161,5\nbob,tt0068646,4\nalice,tt0068646,3\n"
    )
    data = load_ratings(path)
    assert data.ratings.schema.field("user_id").type == pa.string()
    assert data.ratings.schema.field("movie_id").type == pa.string()
    assert data.ratings.column("user_id").to_pylist() == ["alice", "bob", "alice"]


def test_mixed_int_and_string_id_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user_id,movie_id,rating\nalice,1,5\nbob,2,4\n")
    data = load_ratings(path)
    assert data.ratings.schema.field("user_id").type == pa.string()
    assert data.ratings.schema.field("movie_id").type == pa.int64()


def test_numeric_strings_in_the_rating_column_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pl.DataFrame({"user_id": [1, 2], "movie_id": [1, 1], "rating": [" 4.5", "3"]}).write_parquet(
        path
    )
    assert load_ratings(path).ratings.column("rating").to_pylist() == [4.5, 3.0]


def test_fingerprint_depends_on_content() -> None:
    a = pa.table({"x": [1, 2, 3]})
    assert fingerprint_table(a) == fingerprint_table(pa.table({"x": [1, 2, 3]}))
    assert fingerprint_table(a) != fingerprint_table(pa.table({"x": [1, 2, 4]}))
    assert fingerprint_table(a) != fingerprint_table(pa.table({"x": [3, 2, 1]}))
    # chunking does not change it
    chunked = pa.Table.from_batches([pa.record_batch({"x": [1]}), pa.record_batch({"x": [2, 3]})])
    assert fingerprint_table(chunked) == fingerprint_table(a)


# --- bad inputs ---------------------------------------------------------------------------------
# Each case: (file name, writer, expected message). Every message names the file.

CSV_HEADER = "user_id,movie_id,rating\n"


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _bad_zip(path: Path) -> Path:
    good = make_movielens_zip(path.with_name("good.zip")).read_bytes()
    return _write(path, good[: len(good) // 2])  # truncated: no central directory


def _zip_without_u_data(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ratings.csv", CSV_HEADER + "1,2,3\n")
    return path


def _parquet(path: Path, **columns: list[object]) -> Path:
    pl.DataFrame(columns).write_parquet(path)
    return path


BAD_INPUTS = {
    "missing-file": (lambda p: p / "nope.csv", r"nope\.csv: ratings source not found"),
    "missing-columns": (
        lambda p: _write(p / "r.csv", "user,item,stars\n1,2,3\n"),
        r"r\.csv: ratings column `user_id`, `movie_id`, `rating` missing; "
        r"found `user`, `item`, `stars`",
    ),
    "one-missing-column": (
        lambda p: _write(p / "r.csv", "user_id,movie_id,score\n1,2,3\n"),
        r"r\.csv: ratings column `rating` missing; found `user_id`, `movie_id`, `score`",
    ),
    "non-numeric-rating": (
        lambda p: _write(p / "r.csv", CSV_HEADER + "1,2,4\n1,3,five\n"),
        r"r\.csv: column `rating` must be numeric; row 2 has 'five'",
    ),
    "missing-rating": (
        lambda p: _write(p / "r.csv", CSV_HEADER + "1,2,4\n1,3,\n"),
        r"r\.csv: column `rating` has a missing rating at row 2",
    ),
    "nan-rating": (
        lambda p: _parquet(
            p / "r.parquet", user_id=[1, 2], movie_id=[1, 1], rating=[4.0, float("nan")]
        ),
        r"r\.parquet: column `rating` has NaN at row 2",
    ),
    "infinite-rating": (
        lambda p: _parquet(
            p / "r.parquet", user_id=[1, 2], movie_id=[1, 1], rating=[4.0, float("inf")]
        ),
        r"r\.parquet: column `rating` has inf at row 2; expected a finite number",
    ),
    "float-ids": (
        lambda p: _write(p / "r.csv", CSV_HEADER + "1.5,2,4\n2.0,3,5\n"),
        r"r\.csv: column `user_id`: ids must be integers or strings; received type double",
    ),
    "bool-ids": (
        lambda p: _parquet(p / "r.parquet", user_id=[1, 2], movie_id=[True, False], rating=[4, 5]),
        r"r\.parquet: column `movie_id`: ids must be integers or strings; received type bool",
    ),
    "null-ids": (
        lambda p: _write(p / "r.csv", CSV_HEADER + "1,2,4\n,3,5\n"),
        r"r\.csv: column `user_id` has 1 null ids \(first at row 2\)",
    ),
    "empty-csv": (lambda p: _write(p / "r.csv", b""), r"r\.csv: ratings file is empty"),
    "header-only-csv": (
        lambda p: _write(p / "r.csv", CSV_HEADER),
        r"r\.csv: ratings file has no rows",
    ),
    "empty-parquet-file": (
        lambda p: _write(p / "r.parquet", b""),
        r"r\.parquet: cannot read ratings file",
    ),
    "corrupt-parquet": (
        lambda p: _write(p / "r.parquet", b"PAR1" + bytes(range(256)) * 4),
        r"r\.parquet: cannot read ratings file",
    ),
    "zero-row-parquet": (
        lambda p: _parquet(p / "r.parquet", user_id=[], movie_id=[], rating=[]),
        r"r\.parquet: ratings file has no rows",
    ),
    "unknown-suffix": (
        lambda p: _write(p / "r.json", '{"user_id": 1}'),
        r"r\.json: unknown ratings file type '\.json'; expected \.csv or \.parquet",
    ),
    "corrupt-zip": (
        lambda p: _write(p / "ml.zip", b"PK\x03\x04 this is not really a zip"),
        r"ml\.zip: corrupt zip file",
    ),
    "truncated-zip": (lambda p: _bad_zip(p / "ml.zip"), r"ml\.zip: corrupt zip file"),
    "zip-without-u-data": (
        lambda p: _zip_without_u_data(p / "ml.zip"),
        r"ml\.zip: zip holds no u\.data; expected MovieLens 100K",
    ),
    "folder-without-u-data": (
        lambda p: (p / "ml").mkdir() or p / "ml",
        r"ml: not a MovieLens 100K folder \(no u\.data\)",
    ),
    "empty-u-data": (
        lambda p: make_movielens_dir(p / "ml", data=b""),
        r"ml/u\.data: u\.data is empty",
    ),
    "non-numeric-id-in-u-data": (
        lambda p: make_movielens_dir(p / "ml", data=b"1\t2\t3\t0\nabc\t2\t3\t0\n"),
        r"ml/u\.data: u\.data is not tab-separated integer user, item, rating, timestamp",
    ),
    "non-numeric-id-in-zipped-u-data": (
        lambda p: make_movielens_zip(p / "ml.zip", data=b"1\t2\t3\t0\n1\tx7\t3\t0\n"),
        r"ml\.zip:ml-100k/u\.data: u\.data is not tab-separated integer",
    ),
    "bad-u-item": (
        lambda p: _bad_u_item(p / "ml"),
        r"ml/u\.item: u\.item line 2 is not `id\|title\|\.\.\.`",
    ),
}


def _bad_u_item(folder: Path) -> Path:
    make_movielens_dir(folder)
    (folder / "u.item").write_bytes(b"1|Toy Story (1995)|x\nnot an item line\n")
    return folder


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_data_error_naming_the_file(tmp_path: Path, case: str) -> None:
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        load_ratings(path)
    text = str(info.value)
    assert str(tmp_path) in text, "the message names the file"
    assert "\n" not in text, "one line"


def test_missing_items_file(tiny_ratings: TinyData, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"titles\.csv: items file not found"):
        load_ratings(tiny_ratings.ratings, items=tmp_path / "titles.csv")


def test_items_file_without_title_column(tiny_ratings: TinyData, tmp_path: Path) -> None:
    items = _write(tmp_path / "titles.csv", "movie_id,name\n1,x\n")
    with pytest.raises(
        DataError, match=r"titles\.csv: items column `title` missing; found `movie_id`, `name`"
    ):
        load_ratings(tiny_ratings.ratings, items=items)


def test_a_folder_given_as_items_file(tiny_ratings: TinyData, tmp_path: Path) -> None:
    folder = tmp_path / "titles-dir"
    folder.mkdir()
    with pytest.raises(DataError, match=r"titles-dir: is a folder; expected a"):
        load_ratings(tiny_ratings.ratings, items=folder)


# --- tfds, offline ------------------------------------------------------------------------------


@pytest.mark.slow
def test_tfds_source_offline_with_mock_data() -> None:
    """tfds:movielens/100k-ratings through tfds.testing.mock_data: no download, no network.

    First with tfds' random examples (ids are random strings: they load as string ids), then with
    examples we choose (numeric-string ids load as ints, titles line up).
    """
    tf = pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")

    with tfds.testing.mock_data(num_examples=25, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_ratings("tfds:movielens/100k-ratings")
    assert data.source == "tfds:movielens/100k-ratings"
    assert data.ratings.num_rows == 25
    assert data.ratings.column_names == ["user_id", "movie_id", "rating"]
    assert data.ratings.schema.field("rating").type == pa.float64()
    assert data.ratings.schema.field("user_id").type in (pa.string(), pa.int64())
    assert np.isfinite(data.ratings.column("rating").to_numpy()).all()
    assert data.items is not None
    assert data.items.num_rows == 25

    ratings = {
        "user_id": [b"10", b"20", b"10", b"30"],
        "movie_id": [b"7", b"7", b"9", b"9"],
        "user_rating": [5.0, 3.0, 1.0, 4.0],
    }
    movies = {"movie_id": [b"7", b"9"], "movie_title": ["Amélie (2001)".encode(), b"Heat (1995)"]}

    def as_dataset(builder: object, split: str, **kwargs: object) -> object:
        chosen = movies if builder.builder_config.name.endswith("movies") else ratings  # type: ignore[attr-defined]
        return tf.data.Dataset.from_tensor_slices({k: tf.constant(v) for k, v in chosen.items()})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_ratings("tfds:movielens/100k-ratings")
    assert data.ratings.schema == SCHEMA_INT
    assert data.ratings.to_pylist() == [
        {"user_id": 10, "movie_id": 7, "rating": 5.0},
        {"user_id": 20, "movie_id": 7, "rating": 3.0},
        {"user_id": 10, "movie_id": 9, "rating": 1.0},
        {"user_id": 30, "movie_id": 9, "rating": 4.0},
    ]
    assert data.items is not None
    assert data.items.to_pylist() == [
        {"movie_id": 7, "title": "Amélie (2001)"},
        {"movie_id": 9, "title": "Heat (1995)"},
    ]


def test_unknown_tfds_data_set_is_a_data_error() -> None:
    """A name tfds does not know fails before any download, with a DataError."""
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match=r"tfds:no_such_dataset_xyz: cannot load the tfds data set"):
        load_ratings("tfds:no_such_dataset_xyz")
