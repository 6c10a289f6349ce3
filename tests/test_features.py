"""The features preset: side features trained in, folded out; the scorer needs no feature file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from batchrank.bundle import load_bundle
from batchrank.errors import ConfigError, ModelError
from batchrank.presets import PRESETS, preset
from batchrank.scoring.predict import make_predictor
from batchrank.sources import load_ratings
from batchrank.training import fit_bundle, train
from batchrank.vocab import Vocabulary
from tests.conftest import MOVIE_IDS, USER_IDS, TinyData
from tests.jobs.test_job_run import run


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Users (CSV: a numeric, a categorical, a missing age, users without a row) and movies
    (Parquet: a year, multi-hot tags, an id nobody rated)."""
    folder = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(7)
    users = folder / "users.csv"
    lines = ["user_id,age,group"]
    for k, uid in enumerate(USER_IDS[:-5]):  # the last five users have no row
        age = "" if k == 3 else str(int(rng.integers(18, 70)))
        lines.append(f"{uid},{age},{'abc'[k % 3]}")
    users.write_text("\n".join(lines) + "\n")
    items = folder / "movies.parquet"
    tags = [["drama"], ["comedy", "drama"], [], ["action"]]
    pl.DataFrame(
        {
            "movie_id": [*MOVIE_IDS.tolist(), 99999],
            "year": [1950.0 + k for k in range(len(MOVIE_IDS) + 1)],
            "tags": [tags[k % 4] for k in range(len(MOVIE_IDS) + 1)],
        }
    ).write_parquet(items)
    return users, items


@pytest.fixture(scope="module")
def feature_bundle(
    tmp_path_factory: pytest.TempPathFactory, tiny_ratings: TinyData, feature_files: tuple
) -> Path:
    out = tmp_path_factory.mktemp("feature-bundle") / "model"
    users, items = feature_files
    train(
        tiny_ratings.ratings,
        out,
        preset="features",
        items=tiny_ratings.items,
        epochs=1,
        verbose=0,
        user_features=users,
        item_features=items,
    )
    return out


def _all_pairs(n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    u = np.repeat(np.arange(n_users, dtype=np.int32), n_items)  # OOV rows included
    i = np.tile(np.arange(n_items, dtype=np.int32), n_users)
    return u, i


def test_folded_tables_give_the_keras_models_predictions(feature_bundle: Path) -> None:
    keras_bundle = load_bundle(feature_bundle)
    arrays_bundle = load_bundle(feature_bundle, model=False)
    assert arrays_bundle.model is None and arrays_bundle.weights is not None
    u, i = _all_pairs(keras_bundle.users.size, keras_bundle.items.size)
    expected = np.asarray(
        keras_bundle.model.predict({"user": u, "item": i}, batch_size=4096, verbose=0)
    )[:, 0]
    folded = make_predictor(arrays_bundle, batch_size=512)
    assert folded.path == "folded"
    scores, _ = folded.predict(u, i)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    generic = make_predictor(keras_bundle, fold=False, batch_size=512)
    np.testing.assert_allclose(generic.predict(u, i)[0], expected, atol=1e-5)
    # the per-pair cost is the default's: tables of the first layer's width, one per side
    w = arrays_bundle.weights
    assert w["user_embedding"].shape[1] == w["item_embedding"].shape[1]


def test_unknown_and_missing_features_take_the_reserved_row(feature_bundle: Path) -> None:
    """Row 0 of every categorical is the OOV row's and that of users without a table row; a
    missing number is the mean (0); the rated block follows the table's columns."""
    bundle = load_bundle(feature_bundle)
    model = bundle.model
    codes = np.asarray(model.user_codes.value)
    dense = np.asarray(model.user_dense.value)
    assert (codes[0] == 0).all() and (dense[0] == 0).all()  # the OOV row
    assert (codes[-5:] == 0).all() and (dense[-5:, 0] == 0).all()  # users without a row
    assert dense[4, 0] == 0.0  # the user whose age is empty
    assert sorted(set(codes[1:-5, 0].tolist())) == [1, 2, 3]  # groups a, b, c
    assert (dense[-5:, 1:] > 0).any(axis=1).all()  # but they did rate movies
    meta = bundle.metadata["features"]
    assert meta["user"]["covered_ids"] == len(USER_IDS) - 5
    assert [c["name"] for c in meta["user"]["columns"]] == ["age", "group", "rated"]
    assert meta["user"]["columns"][1]["categories"] == ["a", "b", "c"]
    tags = next(c for c in meta["item"]["columns"] if c["name"] == "tags")
    assert tags == {
        "name": "tags",
        "kind": "multi_hot",
        "categories": ["action", "comedy", "drama"],
    }


def test_a_feature_bundle_scores_without_its_feature_files(
    tmp_path: Path,
    tiny_ratings: TinyData,
    feature_bundle: Path,
    feature_files: tuple[Path, Path],
) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    bundle = shutil.copytree(feature_bundle, folder / "model")
    users, items = (shutil.copy(p, folder) for p in feature_files)
    ratings = shutil.copy(tiny_ratings.ratings, folder)
    for p in (users, items, ratings):
        Path(p).unlink()  # nothing but the bundle is left
    out = tmp_path / "top.parquet"
    assert run("score", "--model", str(bundle), "--pairs", "all", "--out", str(out)) == 0
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["predictor"] == "folded"
    top = pq.read_table(out).to_pydict()
    assert len(set(top["user_id"])) == len(USER_IDS)
    # the stars are the Keras model's: low + span * prediction, clipped
    loaded = load_bundle(bundle)
    u = loaded.users.lookup(pq.read_table(out).column("user_id").combine_chunks())
    i = loaded.items.lookup(pq.read_table(out).column("movie_id").combine_chunks())
    pred = np.asarray(loaded.model.predict({"user": u, "item": i}, verbose=0))[:, 0]
    stars = np.clip(1 + 4 * pred, 0, 5)
    np.testing.assert_allclose(top["stars"], stars, atol=2e-5)


def test_the_fingerprint_covers_the_feature_encoding(tmp_path: Path, feature_bundle: Path) -> None:
    bundle = shutil.copytree(feature_bundle, tmp_path / "model")
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["features"]["user"]["columns"][0]["mean"] += 1.0
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not match their fingerprint"):
        load_bundle(bundle, model=False)


def test_rated_sets_fold_too(tiny_ratings: TinyData) -> None:
    data = load_ratings(tiny_ratings.ratings)
    config = preset("features").with_overrides(epochs=1, rated=True, features=False)
    bundle = fit_bundle(data, config, verbose=0).bundle
    model = bundle.model
    u, i = _all_pairs(bundle.users.size, bundle.items.size)
    expected = np.asarray(model.predict({"user": u, "item": i}, verbose=0))[:, 0]
    bundle.model, bundle.weights = None, None
    from batchrank.model import ranking_weights

    bundle.weights = ranking_weights(model)
    np.testing.assert_allclose(make_predictor(bundle).predict(u, i)[0], expected, atol=1e-5)
    rated = np.asarray(model.user_dense.value)
    assert rated.shape == (bundle.users.size, bundle.items.size - 1)
    assert (rated[0] == 0).all()  # the OOV user has rated nothing
    # each user's row: 1/sqrt(n) on the movies of the training split only (not the test's)
    row = rated[1]
    assert np.isclose((row > 0).sum() * row.max() ** 2, 1.0, atol=1e-5)
    assert (row > 0).sum() < (data.ratings.column("user_id").to_numpy() == USER_IDS[0]).sum()


def test_preset_and_feature_files_must_agree(tmp_path: Path, tiny_ratings: TinyData) -> None:
    data = load_ratings(tiny_ratings.ratings)
    tables_only = preset("features").with_overrides(rated=False)  # nothing to learn from
    with pytest.raises(ConfigError, match="needs side features"):
        fit_bundle(data, tables_only, verbose=0)
    users = tmp_path / "users.csv"
    users.write_text("user_id,age\n10,30\n")
    with pytest.raises(ConfigError, match="does not use side features; pass --preset features"):
        train(tiny_ratings.ratings, tmp_path / "b", preset="default", user_features=users)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_presets_without_features_record_the_settings_they_always_did() -> None:
    """`retrain = "if-data-changed"` compares these dicts with older bundles' metadata."""
    for name in ("seed", "default"):
        d = PRESETS[name].to_dict()
        assert not {"features", "feature_dim", "dropout", "rated"} & set(d)
    assert PRESETS["features"].to_dict()["features"] is True


@pytest.mark.realdata
def test_movielens_side_tables(ml100k: Path) -> None:
    from batchrank.feature_sources import movielens_tables
    from batchrank.features import encode_side

    tables = movielens_tables(ml100k)
    assert tables.user is not None and tables.item is not None
    assert tables.user.kinds == {
        "age": "numeric",
        "gender": "categorical",
        "occupation": "categorical",
        "zip_region": "categorical",
    }
    assert tables.item.kinds == {"release_year": "numeric", "genres": "multi_hot"}
    data = load_ratings(ml100k)
    users = Vocabulary.build(data.ratings.column("user_id"), where="t")
    items = Vocabulary.build(data.ratings.column("movie_id"), where="t")
    u, i = encode_side(tables.user, users), encode_side(tables.item, items)
    assert u.covered == 943 and i.covered == 1682
    assert u.cardinalities == (3, 22, 20)  # M/F, 21 occupations, 19 zip regions (+ row 0)
    genres = next(c for c in i.columns if c.name == "genres")
    assert len(genres.categories) == 19 and "Film-Noir" in genres.categories
    assert i.dense.shape == (1683, 20)  # release year + 19 genre slots


def test_train_picks_features_when_tables_are_given_and_says_why(
    tmp_path: Path, tiny_ratings: TinyData, feature_files: tuple
) -> None:
    users, items = feature_files
    result = train(tiny_ratings.ratings, tmp_path / "b", epochs=1, verbose=0,
                   user_features=users, item_features=items)  # fmt: skip
    assert result.bundle.metadata["preset"] == "features"
    assert result.chosen_because is not None
    assert str(users) in result.chosen_because and str(items) in result.chosen_because
    named = train(tiny_ratings.ratings, tmp_path / "c", preset="seed", epochs=1, verbose=0)
    assert named.chosen_because is None
