"""Done-when of issue 16: the tutorial's model, trained with the tutorial's steps on MovieLens
100K, is scored by `batchrank score` after one `batchrank import`, with the tutorial's stars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from batchrank.sources import load_ratings
from tests.byom.tutorial_model import SavableRankingModel, keras
from tests.jobs.test_job_run import manifest_of, run

ML100K = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason=f"MovieLens 100K not at {ML100K}")
def test_tutorial_on_ml100k_import_then_score(tmp_path: Path) -> None:
    data = load_ratings(ML100K)
    ratings = data.ratings
    keras.utils.set_random_seed(42)
    order = np.random.default_rng(42).permutation(ratings.num_rows)
    users = ratings.column("user_id").to_numpy().astype(np.int32)[order]
    movies = ratings.column("movie_id").to_numpy().astype(np.int32)[order]
    labels = ((ratings.column("rating").to_numpy() - 1.0) / 4.0).astype(np.float32)[order]
    assert data.items is not None
    users_count, movies_count = int(users.max()), data.items.num_rows
    model = SavableRankingModel(users_count + 1, movies_count + 1)
    model.compile(
        loss=keras.losses.MeanSquaredError(),
        metrics=[keras.metrics.RootMeanSquaredError()],
        optimizer=keras.optimizers.Adagrad(learning_rate=0.1),
    )
    inputs = {"user_id": users[:80_000], "movie_id": movies[:80_000]}
    model.fit(inputs, labels[:80_000], batch_size=1000, epochs=5, verbose=0)
    model_file = tmp_path / "tutorial.keras"
    model.save(model_file)
    users_file = tmp_path / "users.csv"
    pl.DataFrame({"user_id": np.arange(1, users_count + 1)}).write_csv(users_file)
    bundle = tmp_path / "bundle"
    ref = "tests.byom.tutorial_model:SavableRankingModel"
    assert run("import", "--keras", str(model_file), "--out", str(bundle),
               "--users", str(users_file), "--items", str(ML100K / "u.item"),
               "--custom-objects", ref) == 0  # fmt: skip
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,movie_id\n42,204\n42,141\n42,131\n")
    out = tmp_path / "top.csv"
    assert run("score", "--model", str(bundle), "--pairs", str(pairs), "--out", str(out),
               "--quiet") == 0  # fmt: skip
    assert manifest_of(out)["predictor"] == "folded"
    got = pl.read_csv(out).sort("movie_id")
    assert set(got["title"]) == {
        "Back to the Future (1985)",
        "20,000 Leagues Under the Sea (1954)",
        "Breakfast at Tiffany's (1961)",
    }
    pred = model.predict(
        {"user_id": np.full(3, 42, np.int32), "movie_id": got["movie_id"].to_numpy()}, verbose=0
    )[:, 0]
    np.testing.assert_allclose(got["stars"].to_numpy(), 1.0 + 4.0 * pred, rtol=0, atol=1e-5)
