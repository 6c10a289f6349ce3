"""Model bundles: round trip, metadata, clear errors for bad bundles, atomic writes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pytest

from batchrank.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_KIND,
    DEFAULT_COLUMNS,
    Bundle,
    load_bundle,
    read_metadata,
)
from batchrank.errors import ModelError
from batchrank.sources import load_ratings
from batchrank.storage import TMP_MARK

if TYPE_CHECKING:  # tests/scoring has a conftest too: import it for types only
    from conftest import TinyData

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _predict(bundle: Bundle, users: list[int], movies: list[int]) -> np.ndarray:
    u = bundle.users.lookup(pa.array(users, pa.int64()))
    i = bundle.items.lookup(pa.array(movies, pa.int64()))
    return np.asarray(bundle.model.predict({"user": u, "item": i}, verbose=0))[:, 0]


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(bundle, dst)
    return dst


def _no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if TMP_MARK in p.name]


@pytest.fixture(scope="module")
def loaded(tiny_bundle: Path) -> Bundle:
    return load_bundle(tiny_bundle)


def test_bundle_files(tiny_bundle: Path) -> None:
    names = {p.name for p in tiny_bundle.iterdir()}
    assert names == {
        "model.keras",
        "users.parquet",
        "items.parquet",
        "metadata.json",
        "training_curve.png",
        "weights.npz",
    }
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    assert meta["files"] == sorted(names)
    assert (tiny_bundle / "training_curve.png").read_bytes()[:8] == PNG_MAGIC
    assert _no_leftovers(tiny_bundle.parent) == []


def test_metadata(tiny_bundle: Path, tiny_ratings: TinyData) -> None:
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    assert meta["format_version"] == BUNDLE_FORMAT
    assert meta["kind"] == BUNDLE_KIND
    assert meta["rating_scale"] == [1.0, 5.0]
    lt = meta["label_transform"]
    assert (lt["type"], lt["low"], lt["high"]) == ("affine", 1.0, 5.0)
    assert "(rating - low) / (high - low)" in lt["formula"]
    assert meta["preset"] == "seed"
    hp = meta["hyperparameters"]
    assert hp["name"] == "seed"
    assert hp["epochs"] == 2  # the override is recorded, not the preset's 5
    assert (hp["embedding_dim"], hp["hidden_units"], hp["optimizer"]) == (32, [256, 64], "adagrad")
    data = meta["data"]
    assert data["fingerprint"] == load_ratings(tiny_ratings.ratings).fingerprint
    assert data["fingerprint"].startswith("sha256:")
    assert (data["ratings"], data["users"], data["movies"]) == (1500, 60, 40)
    assert (data["user_id_kind"], data["movie_id_kind"]) == ("int", "int")
    metrics = meta["metrics"]
    for key in ("test_rmse", "test_rmse_normalized", "train_rmse", "test_rmse_global_mean"):
        assert np.isfinite(metrics[key]), key
    assert metrics["test_rmse"] == pytest.approx(4 * metrics["test_rmse_normalized"])
    assert metrics["test_count"] == 300
    assert metrics["train_count"] == 1200
    assert metrics["epochs_run"] == 2
    assert set(meta["versions"]) >= {"keras", "jax", "batchrank", "python"}
    import jax
    import keras

    assert meta["versions"]["keras"] == keras.__version__
    assert meta["versions"]["jax"] == jax.__version__
    assert meta["created_at"].endswith("+00:00")
    assert meta["model_fingerprint"].startswith("sha256:")
    assert len(meta["history"]["loss"]) == 2


def test_round_trip_keeps_vocabularies_titles_and_predictions(
    tiny_bundle: Path, tiny_ratings: TinyData, loaded: Bundle, tmp_path: Path
) -> None:
    frame = tiny_ratings.frame
    assert loaded.users.kind == "int"
    assert loaded.users.ids.to_pylist() == sorted(frame["user_id"].unique().to_list())
    assert loaded.items.ids.to_pylist() == sorted(frame["movie_id"].unique().to_list())
    assert loaded.transform.low == 1.0
    assert loaded.transform.high == 5.0
    # titles aligned with the movie vocabulary; the tricky ones survive CSV and Parquet
    titles = dict(zip(loaded.items.ids.to_pylist(), loaded.titles.to_pylist(), strict=True))
    for movie_id in loaded.items.ids.to_pylist():
        assert titles[movie_id] == tiny_ratings.titles.get(movie_id), movie_id
    assert titles[max(titles)] is None  # the one rated movie without a title
    assert 99999 not in titles  # a titled movie nobody rated is not in the vocabulary
    assert "Monsters, Inc. (2001)" in titles.values()
    assert "Ünïcödé ☃ 🎬" in titles.values()

    users = [*frame["user_id"].to_list()[:50], 12345]  # one unknown user -> the OOV row
    movies = [*frame["movie_id"].to_list()[:50], 1000]
    before = _predict(loaded, users, movies)
    assert np.isfinite(before).all()
    # save again (a second generation) and load: the same predictions and tables
    again_path = loaded.save(tmp_path / "again")
    again = load_bundle(again_path)
    np.testing.assert_allclose(_predict(again, users, movies), before, rtol=1e-6)
    assert again.items_table().equals(loaded.items_table())
    assert again.users.ids.equals(loaded.users.ids)
    assert again.metadata["data"] == loaded.metadata["data"]


def test_metadata_can_be_read_without_keras(tiny_bundle: Path) -> None:
    meta = read_metadata(tiny_bundle)
    assert meta["preset"] == "seed"


# --- bad bundles --------------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope: model bundle not found"):
        load_bundle(tmp_path / "nope")


def test_a_file_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"PK")
    with pytest.raises(ModelError, match="not a model bundle"):
        load_bundle(tmp_path / "model.keras")


def test_folder_without_metadata(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / "metadata.json").unlink()
    with pytest.raises(ModelError, match=r"not a batchrank model bundle \(no metadata\.json\)"):
        load_bundle(bundle)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no metadata\.json"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(
    "content",
    ['{"name": "some-other-tool", "version": 3}', "[1, 2, 3]", '{"kind": "keras"}'],
    ids=["other-tool", "json-list", "other-kind"],
)
def test_foreign_metadata(tiny_bundle: Path, tmp_path: Path, content: str) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / "metadata.json").write_text(content)
    with pytest.raises(ModelError, match="not a batchrank model bundle"):
        load_bundle(bundle)


def test_corrupt_metadata(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / "metadata.json").write_text('{"kind": "batchrank-bundle", ')
    with pytest.raises(ModelError, match=r"metadata\.json: corrupt metadata"):
        load_bundle(bundle)


@pytest.mark.parametrize("version", [BUNDLE_FORMAT + 1, 0, "1", None])
def test_wrong_format_version(tiny_bundle: Path, tmp_path: Path, version: object) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["format_version"] = version
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(
        ModelError, match=rf"bundle format version .* is not supported; expected {BUNDLE_FORMAT}"
    ):
        load_bundle(bundle)


def test_tampered_model_fails_the_fingerprint(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    data = bytearray((bundle / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.keras").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="do not match their fingerprint"):
        load_bundle(bundle)


def test_edited_vocabulary_fails_the_fingerprint(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    import pyarrow.parquet as pq

    table = pq.read_table(bundle / "users.parquet")
    pq.write_table(table.slice(1), bundle / "users.parquet")
    with pytest.raises(ModelError, match="do not match their fingerprint"):
        load_bundle(bundle)


def test_corrupt_model_without_verification_is_a_model_error(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / "model.keras").write_bytes(b"this is not a zip file")
    with pytest.raises(ModelError, match=r"model\.keras: cannot load the model"):
        load_bundle(bundle, verify=False)


@pytest.mark.parametrize("name", ["model.keras", "users.parquet", "items.parquet"])
def test_incomplete_bundle(tiny_bundle: Path, tmp_path: Path, name: str) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / name).unlink()
    with pytest.raises(ModelError, match=rf"bundle is incomplete \({name} missing\)"):
        load_bundle(bundle)


# --- atomic writes ------------------------------------------------------------------------------


def _unserialisable(loaded: Bundle) -> Bundle:
    """The loaded bundle, with metadata json cannot encode: save fails at its very last step,
    after model.keras, the vocabularies and the training curve are written."""
    return Bundle(
        model=loaded.model,
        users=loaded.users,
        items=loaded.items,
        titles=loaded.titles,
        metadata={**loaded.metadata, "oops": {1, 2, 3}},
        history={"loss": [0.3, 0.2], "rmse": [0.5, 0.4]},
    )


def test_failed_save_leaves_no_partial_bundle(loaded: Bundle, tmp_path: Path) -> None:
    target = tmp_path / "out" / "bundle"
    with pytest.raises(TypeError, match="set"):
        _unserialisable(loaded).save(target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_failed_save_keeps_the_existing_bundle(
    tiny_bundle: Path, loaded: Bundle, tmp_path: Path
) -> None:
    target = _copy(tiny_bundle, tmp_path)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(TypeError):
        _unserialisable(loaded).save(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert _no_leftovers(tmp_path) == []
    load_bundle(target)  # still loads, fingerprint intact


def test_save_replaces_an_existing_bundle_and_cleans_leftovers(
    loaded: Bundle, tmp_path: Path
) -> None:

    target = tmp_path / "bundle"
    target.mkdir()
    (target / "stale.txt").write_text("from an older run")
    # what a killed writer leaves behind
    leftover = tmp_path / f".bundle{TMP_MARK}deadbeef0000"
    leftover.mkdir()
    (leftover / "model.keras").write_bytes(b"half")
    loaded.save(target)
    assert not (target / "stale.txt").exists()
    assert not leftover.exists()
    assert _no_leftovers(tmp_path) == []
    assert load_bundle(target).metadata["preset"] == "seed"


def test_scoring_load_skips_keras_and_predicts_the_same(tiny_bundle: Path) -> None:
    """`load_bundle(model=False)` reads weights.npz: the folded predictor gives the same scores."""

    from batchrank.scoring.predict import make_predictor

    full = load_bundle(tiny_bundle)
    light = load_bundle(tiny_bundle, model=False)
    assert light.model is None and light.weights is not None
    rng = np.random.default_rng(0)
    u = rng.integers(0, full.users.size, 500).astype(np.int32)
    i = rng.integers(0, full.items.size, 500).astype(np.int32)
    a = make_predictor(full).predict(u, i)
    b = make_predictor(light).predict(u, i)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    generic = make_predictor(light, fold=False).predict(u, i)
    assert np.allclose(generic[0], a[0], atol=1e-5)


def test_tampered_weights_file_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / "weights.npz").read_bytes())
    data[-100] ^= 0xFF
    (copy / "weights.npz").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="fingerprint"):
        load_bundle(copy, model=False)


# --- integrity behind a matching fingerprint -----------------------------------------------------


def test_keras_load_checks_the_model_against_the_vocabularies(
    tiny_bundle: Path, tmp_path: Path, refingerprint: Callable[[Path], None]
) -> None:
    """The Keras path (``model=True``) checks the model's tables as the scorer's path does."""
    import pyarrow.parquet as pq

    bundle = _copy(tiny_bundle, tmp_path)
    table = pq.read_table(bundle / "items.parquet")
    pq.write_table(table.slice(0, table.num_rows - 1), bundle / "items.parquet")
    refingerprint(bundle)
    with pytest.raises(
        ModelError,
        match=r"model\.keras: array `item_embedding` has shape \(41, 32\); expected \(40, 32\)",
    ):
        load_bundle(bundle)


def test_fingerprint_covers_the_label_transform_not_the_history(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["history"]["loss"] = [9.0, 9.0]
    meta["metrics"]["test_rmse"] = 0.0
    (bundle / "metadata.json").write_text(json.dumps(meta))
    assert load_bundle(bundle, model=False).metadata["metrics"]["test_rmse"] == 0.0
    meta["label_transform"]["high"] = 50.0
    meta["rating_scale"] = [1.0, 50.0]
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not match their fingerprint"):
        load_bundle(bundle, model=False)


# --- the training data's column names ------------------------------------------------------------


def test_bundle_records_its_training_columns(tiny_ratings: TinyData, tmp_path: Path) -> None:
    import polars as pl

    from batchrank.sources import Columns
    from batchrank.training import train

    ratings = tmp_path / "ratings.csv"
    tiny_ratings.frame.rename(
        {"user_id": "userId", "movie_id": "movieId", "rating": "stars"}
    ).write_csv(ratings)
    items = tmp_path / "movies.csv"
    pl.DataFrame(
        {"movieId": list(tiny_ratings.titles), "name": list(tiny_ratings.titles.values())}
    ).write_csv(items)
    columns = Columns(user="userId", item="movieId", rating="stars", title="name")
    train(ratings, tmp_path / "b", preset="seed", items=items, columns=columns, epochs=1, verbose=0)
    bundle = load_bundle(tmp_path / "b", model=False)
    expected = {"user": "userId", "item": "movieId", "rating": "stars", "title": "name"}
    assert bundle.columns == expected
    assert json.loads((tmp_path / "b" / "metadata.json").read_text())["columns"] == expected


def test_columns_default_for_bundles_without_them(
    tiny_bundle: Path, tmp_path: Path, refingerprint: Callable[[Path], None]
) -> None:
    assert load_bundle(tiny_bundle, model=False).columns == DEFAULT_COLUMNS
    bundle = _copy(tiny_bundle, tmp_path)
    meta = json.loads((bundle / "metadata.json").read_text())
    del meta["columns"]
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="fingerprint"):  # the names are fingerprinted
        load_bundle(bundle, model=False)
    refingerprint(bundle)  # as a bundle that never recorded them
    assert load_bundle(bundle, model=False).columns == DEFAULT_COLUMNS


# --- format-1 bundles ----------------------------------------------------------------------------


def _as_format_1(bundle: Path) -> None:
    from batchrank.bundle_files import fingerprint_v1

    meta = json.loads((bundle / "metadata.json").read_text())
    meta["format_version"] = 1
    meta["model_fingerprint"] = fingerprint_v1(bundle)
    (bundle / "metadata.json").write_text(json.dumps(meta))


def test_format_1_bundle_is_refused_then_upgraded(tiny_bundle: Path, tmp_path: Path) -> None:
    from batchrank.bundle import upgrade_bundle

    bundle = _copy(tiny_bundle, tmp_path)
    _as_format_1(bundle)
    with pytest.raises(ModelError, match=r"version 1 is not supported .*upgrade_bundle"):
        load_bundle(bundle, model=False)
    meta = upgrade_bundle(bundle)
    assert meta["format_version"] == BUNDLE_FORMAT
    # same files, same score-relevant metadata: the fingerprint a fresh save gives
    original = load_bundle(tiny_bundle, model=False)
    assert load_bundle(bundle, model=False).fingerprint == original.fingerprint
    assert upgrade_bundle(bundle) == read_metadata(bundle)  # a format-2 bundle: unchanged


def test_upgrade_refuses_a_format_1_bundle_with_edited_files(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    from batchrank.bundle import upgrade_bundle

    bundle = _copy(tiny_bundle, tmp_path)
    _as_format_1(bundle)
    data = bytearray((bundle / "weights.npz").read_bytes())
    data[-100] ^= 0xFF
    (bundle / "weights.npz").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="do not match their format-1 fingerprint"):
        upgrade_bundle(bundle)
    assert json.loads((bundle / "metadata.json").read_text())["format_version"] == 1


def test_read_weights_stored_compressed_and_corrupt(tmp_path: Path) -> None:
    """weights.npz members are read straight into aligned buffers, CRC checked; a compressed
    member (another writer's np.savez_compressed) still reads; a flipped byte is refused."""
    from batchrank.bundle_files import read_weights

    rng = np.random.default_rng(0)
    arrays = {
        "big": rng.standard_normal((3000, 100)).astype(np.float32),  # > 1 MiB: aligned
        "fortran": np.asfortranarray(rng.standard_normal((7, 5))),
        "ints": np.arange(10, dtype=np.int64),
        "scalar": np.array(3.5, dtype=np.float32),
    }
    for save in (np.savez, np.savez_compressed):
        file = tmp_path / f"{save.__name__}.npz"
        save(file, **arrays)
        got = read_weights(file)
        assert set(got) == set(arrays)
        for k, a in arrays.items():
            assert got[k].dtype == a.dtype and got[k].shape == a.shape
            assert np.array_equal(got[k], a)
        assert got["big"].ctypes.data % 64 == 0
    file = tmp_path / "savez.npz"
    data = bytearray(file.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the big member's values
    file.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"cannot read the weights.*CRC"):
        read_weights(file)
