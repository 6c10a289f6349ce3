"""The synthetic sample data: deterministic, committed as generated, and useful to train on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from batchrank.sample_data import FILES, generate

COMMITTED = Path(__file__).resolve().parents[1] / "sample_data"
MAX_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly generated sample-data folder, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("sample") / "sample_data"
    generate(out)
    return out


def _ids(frame: pl.DataFrame, col: str) -> list[int]:
    """The distinct ids of a column, as a list (for ``is_in``)."""
    return frame[col].unique().to_list()


def _known(frame: pl.DataFrame, ratings: pl.DataFrame) -> pl.Series:
    """Whether each candidate pair names a user and a movie found in the ratings."""
    users, movies = _ids(ratings, "user_id"), _ids(ratings, "movie_id")
    return frame["user_id"].is_in(users) & frame["movie_id"].is_in(movies)


def test_generation_is_deterministic(tmp_path: Path, fresh: Path) -> None:
    counts = generate(tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(FILES)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (fresh / name).read_bytes(), name
    assert counts["bytes"] == sum((fresh / name).stat().st_size for name in FILES)


def test_committed_sample_data_matches_a_fresh_generation(fresh: Path) -> None:
    committed = sorted(p.name for p in COMMITTED.iterdir() if not p.name.startswith("."))
    assert committed == sorted(FILES), "regenerate: batchrank sample-data --out sample_data"
    for name in FILES:
        assert (COMMITTED / name).read_bytes() == (fresh / name).read_bytes(), (
            f"sample_data/{name} differs from a fresh generation; "
            "regenerate: batchrank sample-data --out sample_data"
        )


def test_counts_and_schema(fresh: Path) -> None:
    ratings = pl.read_parquet(fresh / "ratings.parquet")
    movies = pl.read_parquet(fresh / "movies.parquet")
    candidates = pl.read_parquet(fresh / "candidates.parquet")
    assert ratings.schema == {"user_id": pl.Int64, "movie_id": pl.Int64, "rating": pl.Float64}
    assert movies.schema == {"movie_id": pl.Int64, "title": pl.String}
    assert candidates.schema == {"user_id": pl.Int64, "movie_id": pl.Int64}
    assert ratings["user_id"].n_unique() == 300
    assert ratings["movie_id"].n_unique() == 200
    assert 14_000 <= ratings.height <= 16_000
    assert 17_000 <= candidates.height <= 19_000
    assert set(ratings["rating"].unique().to_list()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ratings.select("user_id", "movie_id").is_unique().all()


@pytest.mark.parametrize("name", ["ratings", "movies", "candidates"])
def test_csv_holds_the_same_rows_as_parquet(fresh: Path, name: str) -> None:
    from_parquet = pl.read_parquet(fresh / f"{name}.parquet")
    from_csv = pl.read_csv(fresh / f"{name}.csv", schema=from_parquet.schema)
    assert from_csv.equals(from_parquet)


def test_ids_have_gaps(fresh: Path) -> None:
    ratings = pl.read_parquet(fresh / "ratings.parquet")
    for col in ("user_id", "movie_id"):
        ids = np.sort(ratings[col].unique().to_numpy())
        assert ids[-1] - ids[0] + 1 > len(ids), f"{col} is dense"
    assert ratings["user_id"].min() == 1000


def test_every_movie_has_a_title_with_awkward_characters(fresh: Path) -> None:
    ratings = pl.read_parquet(fresh / "ratings.parquet")
    movies = pl.read_parquet(fresh / "movies.parquet")
    assert movies["movie_id"].is_unique().all()
    assert set(movies["movie_id"].to_list()) == set(ratings["movie_id"].unique().to_list())
    assert movies["title"].null_count() == 0
    assert movies["title"].is_unique().all()
    titles = movies["title"].to_list()
    assert any("," in t for t in titles)
    assert any('"' in t for t in titles)
    assert any("'" in t for t in titles)
    assert any(not t.isascii() for t in titles)
    assert any("日本" in t for t in titles)
    assert all(t.endswith(")") and t[-5:-1].isdigit() for t in titles)


def test_candidates_hold_duplicates_and_unknown_ids(fresh: Path) -> None:
    ratings = pl.read_parquet(fresh / "ratings.parquet")
    candidates = pl.read_parquet(fresh / "candidates.parquet")
    duplicates = candidates.height - candidates.unique().height
    assert duplicates == 20
    unknown = candidates.filter(~_known(candidates, ratings))
    assert unknown.height == 10
    assert unknown["user_id"].is_in(_ids(ratings, "user_id")).sum() == 5
    assert unknown["movie_id"].is_in(_ids(ratings, "movie_id")).sum() == 5
    per_user = candidates.filter(_known(candidates, ratings)).group_by("user_id").len()
    assert per_user.height == 300
    assert 50 <= per_user["len"].mean() <= 70  # type: ignore[operator]
    rated = candidates.join(ratings, on=["user_id", "movie_id"], how="semi").height
    assert 0.15 * candidates.height < rated < 0.5 * candidates.height
    assert not candidates["user_id"].is_sorted(), "candidates should be shuffled"


def test_total_size_is_small(fresh: Path) -> None:
    assert sum((fresh / name).stat().st_size for name in FILES) < MAX_BYTES


def test_readme_names_the_regeneration_command(fresh: Path) -> None:
    text = (fresh / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in text
    assert "batchrank sample-data --out sample_data" in text


@pytest.mark.slow
def test_a_model_beats_the_global_mean(fresh: Path) -> None:
    from batchrank.presets import preset
    from batchrank.sources import load_ratings
    from batchrank.training import fit_bundle

    data = load_ratings(fresh / "ratings.parquet", items=fresh / "movies.parquet")
    result = fit_bundle(data, preset("default").with_overrides(epochs=3), verbose=0)
    metrics = result.metrics
    # 3 epochs give about 0.85 stars against 1.07 for the global mean (ratio 0.79).
    assert metrics["test_rmse"] < 0.9 * metrics["test_rmse_global_mean"], metrics


def test_cli_writes_the_files(tmp_path: Path, fresh: Path) -> None:
    from batchrank.cli.main import cli

    out = tmp_path / "s"
    result = CliRunner().invoke(cli, ["sample-data", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
        assert str(out / name) in result.output
    assert "candidate pairs" in result.output
