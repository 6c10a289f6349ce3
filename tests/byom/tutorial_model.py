"""The Keras Recommenders "basic ranking" tutorial's model, as published, and its training.

``RankingModel`` is copied verbatim from the tutorial (keras-io examples/keras_rs/
basic_ranking.py; /work/shared/reference/basic_ranking_tutorial.md). It has no
``get_config()``, so Keras 3 cannot save it to a ``.keras`` file: a notebook user imports the
object with :func:`batchrank.bundle_from_keras`. ``SavableRankingModel`` adds only the
``get_config()`` a user writes to save it (for ``batchrank import`` and the generic path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from batchrank._backend import keras_module

keras = keras_module()

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


# --- the tutorial's code, as published -----------------------------------------------------
class RankingModel(keras.Model):
    """Create the ranking model with the provided parameters.

    Args:
      num_users: Number of entries in the user embedding table.
      num_candidates: Number of entries in the candidate embedding table.
      embedding_dimension: Output dimension for user and movie embedding tables.
    """

    def __init__(
        self,
        num_users,
        num_candidates,
        embedding_dimension=32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Embedding table for users.
        self.user_embedding = keras.layers.Embedding(num_users, embedding_dimension)
        # Embedding table for candidates.
        self.candidate_embedding = keras.layers.Embedding(num_candidates, embedding_dimension)
        # Predictions.
        self.ratings = keras.Sequential(
            [
                # Learn multiple dense layers.
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(64, activation="relu"),
                # Make rating predictions in the final layer.
                keras.layers.Dense(1),
            ]
        )

    def call(self, inputs):
        user_id, movie_id = inputs["user_id"], inputs["movie_id"]
        user_embeddings = self.user_embedding(user_id)
        candidate_embeddings = self.candidate_embedding(movie_id)
        return self.ratings(keras.ops.concatenate([user_embeddings, candidate_embeddings], axis=1))


# --- end of the tutorial's code ------------------------------------------------------------


class SavableRankingModel(RankingModel):
    """The tutorial's model plus the get_config() Keras needs to save it."""

    def __init__(self, num_users, num_candidates, embedding_dimension=32, **kwargs):
        super().__init__(num_users, num_candidates, embedding_dimension, **kwargs)
        self.num_users = int(num_users)
        self.num_candidates = int(num_candidates)
        self.embedding_dimension = int(embedding_dimension)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_users=self.num_users,
            num_candidates=self.num_candidates,
            embedding_dimension=self.embedding_dimension,
        )
        return config


def sample_ratings() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The sample ratings as the tutorial feeds them: raw ids as indices, labels (r - 1) / 4."""
    frame = pl.read_parquet(SAMPLE / "ratings.parquet")
    inputs = {
        "user_id": frame["user_id"].to_numpy().astype(np.int32),
        "movie_id": frame["movie_id"].to_numpy().astype(np.int32),
    }
    return inputs, ((frame["rating"].to_numpy() - 1.0) / 4.0).astype(np.float32)


def train_tutorial(cls: type = RankingModel, epochs: int = 1) -> Any:
    """The tutorial's steps on the sample data: count, build with + 1, compile, fit."""
    keras.utils.set_random_seed(42)
    inputs, labels = sample_ratings()
    users_count = int(inputs["user_id"].max())
    movies_count = int(inputs["movie_id"].max())
    model = cls(users_count + 1, movies_count + 1)
    model.compile(
        loss=keras.losses.MeanSquaredError(),
        metrics=[keras.metrics.RootMeanSquaredError()],
        optimizer=keras.optimizers.Adagrad(learning_rate=0.1),
    )
    model.fit(inputs, labels, batch_size=1000, epochs=epochs, verbose=0)
    return model
