"""The tutorial's model, trained with the tutorial's code, imported and scored (issue 16,
item 1): the scorer's stars equal ``low + (high - low) * model.predict(...)`` to 1e-5, on the
folded path and on the generic one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import batchrank
from batchrank.bundle import load_bundle
from batchrank.errors import ConfigError
from tests.byom.tutorial_model import (
    SAMPLE,
    RankingModel,
    SavableRankingModel,
    keras,
    sample_ratings,
    train_tutorial,
)
from tests.jobs.test_job_run import manifest_of, run
from tests.test_light_imports import _cli, _imported

LOW, HIGH = 1.0, 5.0


@pytest.fixture(scope="module")
def tutorial() -> Any:
    """The tutorial's class as published, trained on the sample data."""
    return train_tutorial(RankingModel)


@pytest.fixture(scope="module")
def savable() -> Any:
    return train_tutorial(SavableRankingModel)


def _ranges() -> dict[str, range]:
    inputs, _ = sample_ratings()
    return {
        "user_ids": range(1, int(inputs["user_id"].max()) + 1),
        "item_ids": range(1, int(inputs["movie_id"].max()) + 1),
    }


def _score(bundle: Path, out: Path) -> pl.DataFrame:
    batchrank.score(
        model=bundle, pairs=[SAMPLE / "candidates.parquet"], out=out, top_k=1000, progress="none"
    )
    return pl.read_csv(out) if out.suffix == ".csv" else pl.read_parquet(out)


def _assert_stars_match(model: Any, got: pl.DataFrame) -> None:
    assert got.height > 1000
    pred = model.predict(
        {
            "user_id": got["user_id"].to_numpy().astype(np.int32),
            "movie_id": got["movie_id"].to_numpy().astype(np.int32),
        },
        batch_size=4096,
        verbose=0,
    )[:, 0]
    want = np.clip(LOW + (HIGH - LOW) * pred.astype(np.float64), 0.0, HIGH)
    np.testing.assert_allclose(got["stars"].to_numpy(), want, rtol=0, atol=1e-5)


def test_the_tutorial_model_as_published_is_folded(tutorial: Any, tmp_path: Path) -> None:
    bundle = batchrank.bundle_from_keras(tutorial, tmp_path / "b", **_ranges())
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["imported"]["predictor"] == "folded"
    assert (bundle / "weights.npz").is_file()
    out = tmp_path / "top.parquet"
    got = _score(bundle, out)
    assert manifest_of(out)["predictor"] == "folded"
    _assert_stars_match(tutorial, got)
    # scoring a folded import needs no Keras, as for batchrank's own bundles
    light = tmp_path / "light.csv"
    pairs = str(SAMPLE / "candidates.parquet")
    args = ("score", "--model", str(bundle), "--pairs", pairs, "--out", str(light), "--quiet")
    assert _imported(_cli(*args)) == []


def test_generic_path_matches_too(savable: Any, tmp_path: Path) -> None:
    bundle = batchrank.bundle_from_keras(savable, tmp_path / "b", predictor="generic", **_ranges())
    loaded = load_bundle(bundle, model=False)
    assert loaded.weights is None and loaded.rows is not None
    out = tmp_path / "top.parquet"
    got = _score(bundle, out)
    assert manifest_of(out)["predictor"] == "generic"
    _assert_stars_match(savable, got)


def test_vocabulary_ids_any_order(tmp_path: Path) -> None:
    """ids='vocabulary': row r + 1 holds user_ids[r], whatever order the ids are listed in."""
    inputs, labels = sample_ratings()
    users = np.unique(inputs["user_id"])[::-1]  # listed in descending order
    items = np.unique(inputs["movie_id"])
    u_row = {int(u): r + 1 for r, u in enumerate(users)}
    i_row = {int(i): r + 1 for r, i in enumerate(items)}
    model = RankingModel(len(users) + 1, len(items) + 1)
    rows = {
        "user_id": np.array([u_row[int(u)] for u in inputs["user_id"]], np.int32),
        "movie_id": np.array([i_row[int(i)] for i in inputs["movie_id"]], np.int32),
    }
    model.compile(loss="mse", optimizer=keras.optimizers.Adagrad(learning_rate=0.1))
    model.fit(rows, labels, batch_size=1000, epochs=1, verbose=0)
    bundle = batchrank.bundle_from_keras(
        model, tmp_path / "b", user_ids=users, item_ids=items, ids="vocabulary"
    )
    got = _score(bundle, tmp_path / "top.csv")
    pred = model.predict(
        {
            "user_id": np.array([u_row[u] for u in got["user_id"]], np.int32),
            "movie_id": np.array([i_row[i] for i in got["movie_id"]], np.int32),
        },
        verbose=0,
    )[:, 0]
    np.testing.assert_allclose(got["stars"].to_numpy(), LOW + 4 * pred, rtol=0, atol=1e-5)


def _functional(kind: str) -> Any:
    u = keras.Input((), dtype="int32", name="user_id")
    i = keras.Input((), dtype="int32", name="movie_id")
    eu, ei = keras.layers.Embedding(1762, 8)(u), keras.layers.Embedding(708, 8)(i)
    if kind == "tutorial":  # item first in the concatenation: still folded
        x = keras.layers.Concatenate(axis=1)([ei, eu])
        x = keras.layers.Dense(16, activation="relu")(x)
        out = keras.layers.Dense(1)(x)
    else:  # a dot product of the embeddings: not the tutorial's shape
        out = keras.layers.Dot(axes=1)([eu, ei])
    model = keras.Model({"user_id": u, "movie_id": i}, out)
    inputs, labels = sample_ratings()
    model.compile(loss="mse", optimizer="adam")
    model.fit(inputs, labels, batch_size=1000, epochs=1, verbose=0)
    return model


@pytest.mark.parametrize(("kind", "path"), [("tutorial", "folded"), ("dot", "generic")])
def test_functional_models(kind: str, path: str, tmp_path: Path) -> None:
    model = _functional(kind)
    bundle = batchrank.bundle_from_keras(model, tmp_path / "b", titles=None, **_ranges())
    out = tmp_path / "top.parquet"
    got = _score(bundle, out)
    assert manifest_of(out)["predictor"] == path
    _assert_stars_match(model, got)


def test_cli_import_then_score(savable: Any, tmp_path: Path) -> None:
    """`batchrank import` of a saved tutorial model, then `batchrank score`, no Python."""
    model_file = tmp_path / "tutorial.keras"
    savable.save(model_file)
    ranges = _ranges()
    users = tmp_path / "users.csv"
    pl.DataFrame({"user_id": list(ranges["user_ids"])}).write_csv(users)
    movies = pl.read_parquet(SAMPLE / "movies.parquet")
    bundle = tmp_path / "bundle"
    code = run(
        "import", "--keras", str(model_file), "--out", str(bundle), "--users", str(users),
        "--items", str(SAMPLE / "movies.parquet"),
        "--custom-objects", "tests.byom.tutorial_model:SavableRankingModel",
    )  # fmt: skip
    assert code == 0
    out = tmp_path / "top.csv"
    assert run("score", "--model", str(bundle), "--pairs", str(SAMPLE / "candidates.parquet"),
               "--out", str(out), "--top-k", "1000", "--quiet") == 0  # fmt: skip
    got = pl.read_csv(out)
    assert manifest_of(out)["predictor"] == "folded"
    # candidate movies missing from movies.parquet are not listed: unknown, skipped
    candidates = pl.read_parquet(SAMPLE / "candidates.parquet")
    unlisted = (~candidates["movie_id"].is_in(movies["movie_id"].implode())).sum()
    assert unlisted > 0
    assert manifest_of(out)["counts"]["rows_skipped_unknown_movie"] == unlisted
    _assert_stars_match(savable, got)
    titles = dict(zip(movies["movie_id"], movies["title"], strict=True))
    assert all(titles.get(m) == t for m, t in zip(got["movie_id"], got["title"], strict=True))


@pytest.mark.parametrize("form", ["mapping", "arrow", "polars", "pandas"])
def test_titles_from_a_notebook_table(form: str, tmp_path: Path) -> None:
    """titles= takes what a notebook holds: a dict, or a pyarrow / polars / pandas table."""
    movies = pl.read_parquet(SAMPLE / "movies.parquet").select("movie_id", "title")
    given: Any = {
        "mapping": lambda: dict(zip(movies["movie_id"], movies["title"], strict=True)),
        "arrow": movies.to_arrow,
        "polars": lambda: movies,
        "pandas": movies.to_pandas,
    }[form]()
    model = _functional("tutorial")
    bundle = batchrank.bundle_from_keras(model, tmp_path / "b", titles=given, **_ranges())
    loaded = load_bundle(bundle)
    assert loaded.titles is not None
    got = dict(zip(loaded.items.ids.to_pylist(), loaded.titles.to_pylist(), strict=True))
    want = dict(zip(movies["movie_id"], movies["title"], strict=True))
    assert {m: t for m, t in got.items() if t is not None} == {
        m: t for m, t in want.items() if m in got
    }
    assert sum(t is not None for t in got.values()) > 100


def test_titles_of_an_unknown_kind_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="titles: expected a mapping"):
        batchrank.bundle_from_keras(
            _functional("dot"), tmp_path / "b", titles=[("a", "b")], **_ranges()
        )
    assert not (tmp_path / "b").exists()
