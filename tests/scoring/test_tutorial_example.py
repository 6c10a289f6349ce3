"""The tutorial's closing example, through the scorer, on a bundle trained on MovieLens 100K."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import batchrank

ML100K = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason=f"MovieLens 100K not at {ML100K}")
def test_user_42_movies_204_141_131(tmp_path: Path) -> None:
    bundle = tmp_path / "ml100k-seed"
    batchrank.train(ML100K, bundle, preset="seed", verbose=0)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,movie_id\n42,204\n42,141\n42,131\n")
    out = tmp_path / "top.csv"
    manifest = batchrank.score(model=bundle, pairs=[pairs], out=out, progress="none")
    got = pl.read_csv(out)
    assert got.height == 3
    assert manifest["counts"]["missing_titles"] == 0
    assert set(got["title"].to_list()) == {
        "Back to the Future (1985)",
        "20,000 Leagues Under the Sea (1954)",
        "Breakfast at Tiffany's (1961)",
    }
    assert got["rank"].to_list() == [1, 2, 3]
    assert ((got["stars"] > 1.0) & (got["stars"] < 5.0)).all()
    # the comma in "20,000 Leagues" survives CSV quoting
    assert '"20,000 Leagues Under the Sea (1954)"' in out.read_text()
