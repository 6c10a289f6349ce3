"""One items source for train, score, evaluate and job files: MovieLens folder, .zip, u.item,
CSV, Parquet (issue 16, item 3)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl
import pytest

from batchrank.errors import DataError
from batchrank.sources import Columns, load_items
from tests.conftest import SAMPLE
from tests.jobs.test_job_run import run


def _u_item_text() -> str:
    movies = pl.read_parquet(SAMPLE / "movies.parquet")
    # u.item is ISO-8859-1; titles outside it become `?`, as MovieLens' own are Latin-1
    return "".join(
        f"{mid}|{title.encode('iso-8859-1', 'replace').decode('iso-8859-1')}|01-Jan-1995||x|0|1\n"
        for mid, title in zip(movies["movie_id"], movies["title"], strict=True)
    )


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MovieLens-shaped folder (u.data, u.item) from the sample data."""
    folder = tmp_path_factory.mktemp("ml") / "ml-sample"
    folder.mkdir()
    ratings = pl.read_parquet(SAMPLE / "ratings.parquet")
    (folder / "u.data").write_text(
        "".join(
            f"{u}\t{m}\t{int(r)}\t881250949\n"
            for u, m, r in ratings.select("user_id", "movie_id", "rating").iter_rows()
        )
    )
    (folder / "u.item").write_bytes(_u_item_text().encode("iso-8859-1"))
    return folder


def test_every_items_source_gives_the_same_titles(movielens: Path, tmp_path: Path) -> None:
    archive = tmp_path / "ml.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(movielens / "u.data", "ml-sample/u.data")
        zf.write(movielens / "u.item", "ml-sample/u.item")
    renamed = tmp_path / "movies.item"
    renamed.write_bytes((movielens / "u.item").read_bytes())
    want = load_items(movielens / "u.item")
    assert want.num_rows == 200
    assert want.column_names == ["movie_id", "title"]
    for source in (movielens, archive, renamed):
        assert load_items(source).equals(want), source
    csv = tmp_path / "titles.csv"
    pl.from_arrow(want).rename({"movie_id": "mid", "title": "name"}).write_csv(csv)
    assert load_items(csv, Columns(item="mid", title="name")).equals(want)


def test_score_takes_u_item(sample_bundle: Path, movielens: Path, tmp_path: Path) -> None:
    out = tmp_path / "top.csv"
    pairs = str(SAMPLE / "candidates.parquet")
    items = str(movielens / "u.item")
    assert run("score", "--model", str(sample_bundle), "--pairs", pairs, "--out", str(out),
               "--items", items, "--quiet") == 0  # fmt: skip
    got = pl.read_csv(out)
    titles = {r["movie_id"]: r["title"] for r in load_items(movielens).to_pylist()}
    assert got.height > 0
    assert all(titles[m] == t for m, t in zip(got["movie_id"], got["title"], strict=True))


def test_train_takes_a_folder_as_items(movielens: Path, tmp_path: Path) -> None:
    from batchrank.bundle import load_bundle
    from batchrank.training import train

    out = tmp_path / "model"
    train(SAMPLE / "ratings.parquet", out, preset="seed", items=movielens, epochs=1, verbose=0)
    bundle = load_bundle(out, model=False)
    assert bundle.titles is not None and bundle.titles.null_count == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.item", b"", "u.item holds no movies"),
        ("bad.item", b"abc|Title\n", "u.item line 1 is not `id|title|...`"),
        ("bad.zip", b"not a zip", "corrupt zip file"),
    ],
)
def test_bad_items_sources_name_the_file(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        load_items(path)
    assert str(path) in str(err.value)


def test_a_folder_without_u_item_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"expected a MovieLens folder \(with u.item\)"):
        load_items(tmp_path)
