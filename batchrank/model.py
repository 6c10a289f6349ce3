"""The ranking model of the Keras Recommenders "basic ranking" tutorial, made serializable.

User and movie embeddings are concatenated and passed through Dense 256 relu -> Dense 64 relu ->
Dense 1. The first Dense layer acts on the concatenation, so the scorer can fold it into
per-user and per-movie tables (see :mod:`batchrank.scoring.predict`). The ``default`` preset adds
per-user and per-movie bias terms and a global offset, which the fold keeps as is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from batchrank._backend import keras_module

keras = keras_module()

__all__ = ["RankingModel", "ranking_weights"]


@keras.saving.register_keras_serializable(package="batchrank")
class RankingModel(keras.Model):  # type: ignore[misc,name-defined]
    """Embeddings -> Dense stack -> one rating in label units.

    Args:
        num_users: rows of the user embedding table (known users plus the OOV row).
        num_items: rows of the movie embedding table (known movies plus the OOV row).
        embedding_dim: width of both embedding tables.
        hidden_units: widths of the relu Dense layers; the first acts on the concatenation.
        bias_terms: add per-user and per-movie biases and a global offset to the output.
        l2: L2 penalty on the embeddings (and biases), 0 for none.
        global_bias: initial value of the global offset (for instance the mean label).

    Inputs are a dict ``{"user": int32[B], "item": int32[B]}`` of vocabulary indices.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 32,
        hidden_units: tuple[int, ...] | list[int] = (256, 64),
        bias_terms: bool = False,
        l2: float = 0.0,
        global_bias: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_users) < 1 or int(num_items) < 1:
            raise ValueError(
                f"num_users and num_items must be >= 1; received {num_users}, {num_items}"
            )
        if int(embedding_dim) < 1:
            raise ValueError(f"embedding_dim must be >= 1; received {embedding_dim}")
        hidden = tuple(int(h) for h in hidden_units)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden_units must be positive widths; received {hidden_units}")
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0; received {l2}")
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.embedding_dim = int(embedding_dim)
        self.hidden_units = hidden
        self.bias_terms = bool(bias_terms)
        self.l2 = float(l2)
        self.global_bias_init = float(global_bias)
        reg = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        self.user_embedding = keras.layers.Embedding(
            self.num_users, self.embedding_dim, embeddings_regularizer=reg, name="user_embedding"
        )
        self.item_embedding = keras.layers.Embedding(
            self.num_items, self.embedding_dim, embeddings_regularizer=reg, name="item_embedding"
        )
        self.hidden_layers = [
            keras.layers.Dense(h, activation="relu", name=f"dense_{i}")
            for i, h in enumerate(hidden)
        ]
        self.output_layer = keras.layers.Dense(1, name="rating")
        if self.bias_terms:
            self.user_bias = keras.layers.Embedding(
                self.num_users,
                1,
                embeddings_initializer="zeros",
                embeddings_regularizer=reg,
                name="user_bias",
            )
            self.item_bias = keras.layers.Embedding(
                self.num_items,
                1,
                embeddings_initializer="zeros",
                embeddings_regularizer=reg,
                name="item_bias",
            )
            self.global_bias = self.add_weight(
                shape=(1,),
                initializer=keras.initializers.Constant(self.global_bias_init),
                name="global_bias",
            )

    def first_layer_input(self, user: Any, item: Any, training: Any = None) -> Any:
        """What the first Dense layer acts on: ``concat(user part, item part)``.

        Both parts are functions of the index alone (a subclass may add side features looked
        up by index), which is what lets the scorer fold the first layer; see
        :meth:`first_layer_tables`.
        """
        return keras.ops.concatenate([self.user_embedding(user), self.item_embedding(item)], 1)

    def first_layer_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-user rows, per-item rows and the first kernel, as the scorer folds them.

        Row ``r`` of the user table is the user part of :meth:`first_layer_input` for index
        ``r``; the kernel's first ``width`` rows act on it, the rest on the item table's rows.
        """
        kernel = _weights(self.hidden_layers[0])[0]
        return _weights(self.user_embedding)[0], _weights(self.item_embedding)[0], kernel

    def call(self, inputs: dict[str, Any], training: Any = None) -> Any:
        """Predict a rating in label units for each (user, item) index pair."""
        user, item = inputs["user"], inputs["item"]
        x = self.first_layer_input(user, item, training)
        for layer in self.hidden_layers:
            x = layer(x)
        out = self.output_layer(x)
        if self.bias_terms:
            out = out + self.user_bias(user) + self.item_bias(item) + self.global_bias
        return out

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, for saving."""
        config = super().get_config()
        config.update(
            num_users=self.num_users,
            num_items=self.num_items,
            embedding_dim=self.embedding_dim,
            hidden_units=list(self.hidden_units),
            bias_terms=self.bias_terms,
            l2=self.l2,
            global_bias=self.global_bias_init,
        )
        return config

    def build_for_inference(self) -> None:
        """Create the weights by calling the model once on a tiny batch."""
        self({"user": np.zeros((1,), np.int32), "item": np.zeros((1,), np.int32)})


def _weights(layer: Any) -> list[np.ndarray]:
    return [np.asarray(w.value, dtype=np.float32) for w in layer.weights]


def ranking_weights(model: Any) -> dict[str, np.ndarray]:
    """The arrays of a :class:`batchrank.model.RankingModel`, by name, as float32 numpy.

    The embeddings are :meth:`RankingModel.first_layer_tables`: for a model with side features
    (:mod:`batchrank.feature_model`) each row already holds its id's features, so the bundle
    is scored without them.

    Stored in bundles as ``weights.npz`` so the scorer can fold and predict without importing
    Keras or deserializing the model (cold start; see README "Performance").
    """
    users, items, kernel = model.first_layer_tables()
    out: dict[str, np.ndarray] = {"user_embedding": users, "item_embedding": items}
    for n, layer in enumerate(model.hidden_layers):
        out[f"dense_{n}_kernel"], out[f"dense_{n}_bias"] = _weights(layer)
    out["dense_0_kernel"] = kernel
    out["rating_kernel"], out["rating_bias"] = _weights(model.output_layer)
    if model.bias_terms:
        out["user_bias"] = _weights(model.user_bias)[0][:, 0]
        out["item_bias"] = _weights(model.item_bias)[0][:, 0]
        out["global_bias"] = np.asarray(model.global_bias.value, dtype=np.float32).reshape(1)
    return out
