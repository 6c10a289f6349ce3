"""Training: ratings in, model bundle out."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from batchrank.bundle import Bundle, LabelTransform
from batchrank.errors import ConfigError, DataError
from batchrank.holdout import indexed_ratings, split_fraction, test_metrics
from batchrank.presets import TrainConfig
from batchrank.sources import ITEM, RATING, TITLE, USER, Columns, RatingsData
from batchrank.vocab import Vocabulary, coerce_ids

if TYPE_CHECKING:
    from batchrank.feature_sources import SideTables

__all__ = ["TrainResult", "fit_bundle", "rating_scale_of", "rmse_of"]


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    bundle: Bundle
    metrics: dict[str, float]
    chosen_because: str | None = None
    """Why ``train`` picked the preset when none was given (None when one was)."""


def rating_scale_of(
    ratings: pa.Array, where: str, scale: tuple[float, float] | None = None
) -> LabelTransform:
    """The label transform: the given scale (checked against the data) or the data's min/max."""
    values = ratings.to_numpy()
    if scale is None:
        low, high = float(values.min()), float(values.max())
        if high <= low:
            raise DataError(
                f"{where}: every rating is {low}; cannot infer a scale "
                "(pass --rating-scale MIN,MAX)"
            )
        return LabelTransform(low, high)
    low, high = scale
    if not high > low:
        raise ConfigError(f"rating scale must be MIN,MAX with MIN < MAX; received {low},{high}")
    outside = (values < low) | (values > high)
    if outside.any():
        row = int(np.argmax(outside))
        raise DataError(
            f"{where}: rating {values[row]:g} at row {row + 1} is outside the scale "
            f"{low:g}–{high:g}"
        )
    return LabelTransform(float(low), float(high))


def _align_titles(items: Vocabulary, table: pa.Table | None) -> pa.Array | None:
    if table is None:
        return None
    import polars as pl

    ids = items.to_table(ITEM)
    # the items file may spell ids differently (text "7" for integer ids): cast to the
    # vocabulary's kind; ids that cannot be cast simply match nothing
    cast, _ = coerce_ids(table.column(ITEM), items.kind, where=f"items: column `{ITEM}`")
    src = table.set_column(0, ITEM, cast)
    # one title per movie, the first given (u.item or tfds may repeat an id): the titles must
    # line up with the vocabulary row for row
    right = pl.DataFrame(src).unique(subset=ITEM, keep="first", maintain_order=True)
    left = pl.DataFrame(ids)
    joined = left.join(right, on=ITEM, how="left", maintain_order="left")
    return joined.get_column(TITLE).to_arrow()


def _set_random_seed(keras: Any, seed: int) -> None:
    """``keras.utils.set_random_seed`` without importing TensorFlow.

    Keras seeds TensorFlow too whenever it is importable, which costs seconds and defeats the
    lazy import (TensorFlow backs only the ``tfds:`` source). Seeding Python, NumPy and Keras'
    global seed generator is all a JAX run needs; fall back to Keras when its internals move.
    """
    import sys

    if "tensorflow" not in sys.modules:
        try:
            import random

            from keras.src.backend.common import global_state
            from keras.src.random import seed_generator
            from keras.src.utils import rng_utils

            global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
            global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
            random.seed(seed)
            np.random.seed(seed)
            return
        except (ImportError, AttributeError):
            pass
    keras.utils.set_random_seed(seed)


def rmse_of(model: Any, users: np.ndarray, items: np.ndarray, labels: np.ndarray) -> float:
    """RMSE in label units of a model over index arrays."""
    if len(labels) == 0:
        return float("nan")
    pred = model.predict({"user": users, "item": items}, batch_size=8192, verbose=0)[:, 0]
    return float(np.sqrt(np.mean((pred.astype(np.float64) - labels) ** 2)))


def fit_bundle(
    data: RatingsData,
    config: TrainConfig,
    *,
    rating_scale: tuple[float, float] | None = None,
    verbose: int | str = "auto",
    columns: Columns | None = None,
    test_data: RatingsData | None = None,
    features: SideTables | None = None,
) -> TrainResult:
    """Train a model on ``data`` and return the (unsaved) bundle and its metrics.

    ``test_data``, a separate held-out set, is what the test metrics measure when given
    (see :mod:`batchrank.holdout`); unknown ids in it are scored with the OOV row.

    ``columns``, the names the ratings and items files used, is recorded in the metadata so the
    scorer can default to them (see :attr:`batchrank.bundle.Bundle.columns`). ``features``:
    side tables (:func:`batchrank.feature_sources.load_side_tables`) for a preset with
    ``features``; their encoding is recorded under the metadata's ``features``.
    """
    if config.features and not config.rated and (features is None or not features.any):
        raise ConfigError(
            f"{data.source}: preset {config.name!r} needs side features: train on a MovieLens "
            "folder or zip (u.user, u.item), or pass --user-features / --item-features"
        )
    if not config.features and features is not None and features.any:
        raise ConfigError(
            f"preset {config.name!r} does not use side features; pass --preset features"
        )
    from batchrank._backend import keras_module

    keras = keras_module()
    from batchrank.model import RankingModel

    table = data.ratings
    n = table.num_rows
    if n < 2:
        raise DataError(f"{data.source}: need at least 2 ratings to train; found {n}")
    transform = rating_scale_of(table.column(RATING).combine_chunks(), data.source, rating_scale)
    users = Vocabulary.build(table.column(USER), where=f"{data.source}: column `{USER}`")
    items = Vocabulary.build(table.column(ITEM), where=f"{data.source}: column `{ITEM}`")
    u_idx = users.lookup(table.column(USER).combine_chunks())
    i_idx = items.lookup(table.column(ITEM).combine_chunks())
    labels = transform.to_label(table.column(RATING).to_numpy()).astype(np.float32)

    _set_random_seed(keras, config.seed)
    rng = np.random.default_rng(config.seed)
    perm = rng.permutation(n)
    n_test = round(n * config.test_fraction)
    train_rows, test_rows = perm[: n - n_test], perm[n - n_test :]
    n_val = round(len(train_rows) * config.validation_fraction)
    fit_rows, val_rows = (
        train_rows[: len(train_rows) - n_val],
        train_rows[len(train_rows) - n_val :],
    )

    fu, fi = u_idx[fit_rows].copy(), i_idx[fit_rows].copy()
    if config.oov_rate > 0:
        # Teach the reserved row an average user / movie, so `--unknown oov` scores sensibly.
        fu[rng.random(len(fu)) < config.oov_rate] = 0
        fi[rng.random(len(fi)) < config.oov_rate] = 0
    shape: dict[str, Any] = {
        "embedding_dim": config.embedding_dim,
        "hidden_units": config.hidden_units,
        "bias_terms": config.bias_terms,
        "l2": config.l2,
        "global_bias": float(labels[fit_rows].mean()) if config.bias_terms else 0.0,
    }
    feature_meta: dict[str, Any] | None = None
    if config.rated or (features is not None and features.any):
        from batchrank.feature_model import build_feature_model
        from batchrank.feature_sources import SideTables

        model, feature_meta = build_feature_model(
            users,
            items,
            features or SideTables(),
            feature_dim=config.feature_dim,
            dropout=config.dropout,
            rated=(u_idx[fit_rows], i_idx[fit_rows]) if config.rated else None,
            **shape,
        )
    else:
        model = RankingModel(users.size, items.size, **shape)
    optimizer = (
        keras.optimizers.Adagrad(learning_rate=config.learning_rate)
        if config.optimizer == "adagrad"
        else keras.optimizers.Adam(learning_rate=config.learning_rate)
    )
    model.compile(
        loss=keras.losses.MeanSquaredError(),
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
        optimizer=optimizer,
    )
    callbacks = []
    validation = None
    if n_val > 0:
        validation = ({"user": u_idx[val_rows], "item": i_idx[val_rows]}, labels[val_rows])
        if config.patience > 0:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_rmse", patience=config.patience, restore_best_weights=True
                )
            )
    history = model.fit(
        {"user": fu, "item": fi},
        labels[fit_rows],
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=validation,
        callbacks=callbacks,
        shuffle=True,
        verbose=verbose,
    )
    span = transform.high - transform.low
    train_rmse = rmse_of(model, u_idx[train_rows], i_idx[train_rows], labels[train_rows])
    held = (u_idx[test_rows], i_idx[test_rows], labels[test_rows], "split")
    if test_data is not None:
        held = (*indexed_ratings(users, items, transform, test_data), test_data.source)
    metrics = {
        **test_metrics(
            lambda u, i: model.predict({"user": u, "item": i}, batch_size=8192, verbose=0)[:, 0],
            *held[:3],
            labels[train_rows],
            span,
            held[3],
        ),
        "train_rmse": train_rmse * span,
        "train_count": len(train_rows),
        # the slice of the training ratings early stopping watches (not a held-out test)
        "validation_count": int(n_val),
        "epochs_run": len(history.history.get("loss", [])),
    }
    import jax
    import keras as _k

    import batchrank

    metadata: dict[str, Any] = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "preset": config.name,
        "hyperparameters": config.to_dict(),
        "rating_scale": [transform.low, transform.high],
        "label_transform": transform.to_dict(),
        "data": {
            "source": data.source,
            "fingerprint": data.fingerprint,
            "ratings": n,
            "users": len(users),
            "movies": len(items),
            "user_id_kind": users.kind,
            "movie_id_kind": items.kind,
        },
        **({"columns": _columns_dict(columns)} if columns is not None else {}),
        **({"features": feature_meta} if feature_meta is not None else {}),
        "metrics": metrics,
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
        "versions": {
            "batchrank": batchrank.__version__,
            "keras": _k.__version__,
            "jax": jax.__version__,
            "python": platform.python_version(),
        },
    }
    bundle = Bundle(
        model=model,
        users=users,
        items=items,
        titles=_align_titles(items, data.items),
        metadata=metadata,
        history={k: [float(x) for x in v] for k, v in history.history.items()},
    )
    return TrainResult(bundle=bundle, metrics=metrics)


def _columns_dict(columns: Columns) -> dict[str, str]:
    return {
        "user": columns.user,
        "item": columns.item,
        "rating": columns.rating,
        "title": columns.title,
    }


def train(
    ratings: str | Path,
    out: str | Path,
    *,
    preset: str | None = None,
    items: str | Path | None = None,
    columns: Columns | None = None,
    rating_scale: tuple[float, float] | None = None,
    epochs: int | None = None,
    test_fraction: float | None = None,
    seed: int | None = None,
    verbose: int | str = "auto",
    user_features: str | Path | None = None,
    item_features: str | Path | None = None,
    categorical: tuple[str, ...] = (),
    test_ratings: str | Path | None = None,
) -> TrainResult:
    """Load ratings, train a preset, and write the bundle atomically to ``out``.

    ``test_fraction=0`` trains on every rating; ``test_ratings`` (any ratings source) is a
    separate held-out set, evaluated instead of a split, whose RMSE the bundle records.

    A preset with ``features`` reads ``user_features`` / ``item_features`` (CSV or Parquet;
    ``categorical`` names columns to treat as categories), else the MovieLens files beside the
    ratings; see docs/features.md. ``preset=None`` is ``features`` where side features are
    found (feature files given, or a MovieLens folder or zip with ``u.user`` / ``u.item``),
    else ``default``.
    """
    from batchrank.feature_sources import load_side_tables
    from batchrank.presets import preset as get_preset
    from batchrank.sources import load_ratings

    columns = columns or Columns()
    given = user_features is not None or item_features is not None
    tables: SideTables | None = None
    if preset is None or given or get_preset(preset).features:
        tables = load_side_tables(
            ratings,
            user_features=Path(user_features) if user_features is not None else None,
            item_features=Path(item_features) if item_features is not None else None,
            user_column=columns.user,
            item_column=columns.item,
            categorical=categorical,
        )
    because = None
    if preset is None:
        preset = "features" if tables is not None and tables.any else "default"
        if tables is not None and tables.any:
            found = [t.source for t in (tables.user, tables.item) if t is not None]
            because = f"side features found in {', '.join(found)}; --preset default ignores them"
        else:
            because = "no side features found (u.user / u.item, --user-features, --item-features)"
    config = get_preset(preset).with_overrides(
        epochs=epochs, test_fraction=split_fraction(test_fraction, test_ratings), seed=seed
    )
    if not config.features and not given:
        tables = None  # found beside the ratings, but this preset does not use them
    data = load_ratings(ratings, columns=columns, items=Path(items) if items is not None else None)
    held = load_ratings(test_ratings, columns=columns) if test_ratings is not None else None
    result = fit_bundle(
        data,
        config,
        rating_scale=rating_scale,
        verbose=verbose,
        columns=columns,
        features=tables,
        test_data=held,
    )
    result.bundle.save(Path(out))
    return replace(result, chosen_because=because)


__all__ += ["TITLE", "train"]
