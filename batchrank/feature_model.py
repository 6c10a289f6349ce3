"""The ranking model with side features, still foldable by the scorer.

Each side (users, movies) contributes its id embedding, one learned embedding per categorical
feature and its dense block (normalised numerics, multi-hot tags), all concatenated before the
first Dense layer. The encoded features (:class:`batchrank.features.EncodedSide`) are stored in
the model as non-trainable tables indexed by vocabulary row, so the model's inputs stay
``{"user", "item"}`` indices and the generic scoring path works unchanged.

Because a side's features are a function of its index, the user part of the first layer's input
is a per-user table and the item part a per-item table: :meth:`first_layer_tables` computes
them (padded with zero columns, and the kernel with zero rows, to one width), and the bundle
stores them as its ``user_embedding`` / ``item_embedding``. The scorer then folds the first
layer as it does for every bundle and never sees a feature file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from batchrank._backend import keras_module
from batchrank.features import EncodedSide, encode_side, with_rated
from batchrank.model import RankingModel, _weights

if TYPE_CHECKING:
    from batchrank.feature_sources import SideTables
    from batchrank.vocab import Vocabulary

keras = keras_module()

__all__ = ["FeatureRankingModel", "build_feature_model"]


@keras.saving.register_keras_serializable(package="batchrank")
class FeatureRankingModel(RankingModel):
    """:class:`RankingModel` plus per-id side features.

    Args:
        user_cardinalities: rows of each user categorical embedding (categories + row 0).
        user_dense: width of the users' dense block (numerics and multi-hot slots).
        item_cardinalities, item_dense: the same for movies.
        feature_dim: width of each categorical feature's embedding.
        dropout: dropout on the first layer's input while training (0 for none).
        **kwargs: :class:`RankingModel`'s arguments.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        *,
        user_cardinalities: tuple[int, ...] | list[int] = (),
        user_dense: int = 0,
        item_cardinalities: tuple[int, ...] | list[int] = (),
        item_dense: int = 0,
        feature_dim: int = 8,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if int(feature_dim) < 1:
            raise ValueError(f"feature_dim must be >= 1; received {feature_dim}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1); received {dropout}")
        self.user_cardinalities = tuple(int(c) for c in user_cardinalities)
        self.item_cardinalities = tuple(int(c) for c in item_cardinalities)
        self.user_dense_width, self.item_dense_width = int(user_dense), int(item_dense)
        self.feature_dim, self.dropout = int(feature_dim), float(dropout)
        reg = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        # plain attributes (not a dict of dicts), so Keras tracks every layer and variable
        self.user_codes, self.user_dense, self.user_features = self._side(
            "user", self.num_users, self.user_cardinalities, self.user_dense_width, reg
        )
        self.item_codes, self.item_dense, self.item_features = self._side(
            "item", self.num_items, self.item_cardinalities, self.item_dense_width, reg
        )
        self.input_dropout = keras.layers.Dropout(self.dropout) if self.dropout > 0 else None

    def _side(
        self, side: str, rows: int, cards: tuple[int, ...], dense: int, reg: Any
    ) -> tuple[Any, Any, list[Any]]:
        codes = (
            self.add_weight(
                shape=(rows, len(cards)),
                dtype="int32",
                initializer="zeros",
                trainable=False,
                name=f"{side}_codes",
            )
            if cards
            else None
        )
        block = (
            self.add_weight(
                shape=(rows, dense), initializer="zeros", trainable=False, name=f"{side}_dense"
            )
            if dense
            else None
        )
        embeddings = [
            keras.layers.Embedding(
                c, self.feature_dim, embeddings_regularizer=reg, name=f"{side}_feature_{j}"
            )
            for j, c in enumerate(cards)
        ]
        return codes, block, embeddings

    def _side_of(self, name: str) -> tuple[Any, Any, Any, list[Any]]:
        """The id embedding, codes, dense block and feature embeddings of a side."""
        if name == "user":
            return self.user_embedding, self.user_codes, self.user_dense, self.user_features
        return self.item_embedding, self.item_codes, self.item_dense, self.item_features

    def set_features(self, user: EncodedSide | None, item: EncodedSide | None) -> None:
        """Load the encoded tables into the model (a side's tables exist iff it has them)."""
        for name, enc in (("user", user), ("item", item)):
            _, codes, dense, _ = self._side_of(name)
            if enc is None:
                continue
            if codes is not None:
                codes.assign(np.asarray(enc.codes, np.int32))
            if dense is not None:
                dense.assign(np.asarray(enc.dense, np.float32))

    def _part(self, name: str, index: Any) -> list[Any]:
        emb, codes, dense, features = self._side_of(name)
        parts = [emb(index)]
        if codes is not None:
            looked_up = keras.ops.take(codes, index, axis=0)
            parts += [e(looked_up[:, j]) for j, e in enumerate(features)]
        if dense is not None:
            parts.append(keras.ops.take(dense, index, axis=0))
        return parts

    def first_layer_input(self, user: Any, item: Any, training: Any = None) -> Any:
        """``concat(user id embedding, user features, movie id embedding, movie features)``."""
        x = keras.ops.concatenate([*self._part("user", user), *self._part("item", item)], 1)
        if self.input_dropout is not None:
            x = self.input_dropout(x, training=training)
        return x

    def _table(self, name: str) -> np.ndarray:
        emb, codes, dense, features = self._side_of(name)
        parts = [_weights(emb)[0]]
        if codes is not None:
            rows = np.asarray(codes.value)
            parts += [_weights(e)[0][rows[:, j]] for j, e in enumerate(features)]
        if dense is not None:
            parts.append(np.asarray(dense.value, np.float32))
        return np.concatenate(parts, axis=1)

    def first_layer_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-id rows with the features resolved, padded with zeros to one width."""
        users, items = self._table("user"), self._table("item")
        kernel = _weights(self.hidden_layers[0])[0]
        du, di = users.shape[1], items.shape[1]
        width = max(du, di)

        def pad(a: np.ndarray, cols: int) -> np.ndarray:
            return np.pad(a, ((0, 0), (0, cols)))

        k_user = np.pad(kernel[:du], ((0, width - du), (0, 0)))
        k_item = np.pad(kernel[du:], ((0, width - di), (0, 0)))
        return (
            pad(users, width - du),
            pad(items, width - di),
            np.ascontiguousarray(np.concatenate([k_user, k_item]), np.float32),
        )

    def build_from_config(self, config: dict[str, Any]) -> None:
        """Create every weight at load time (by one call on index 0), before they are read.

        Keras' default builds a subclassed model from symbolic input shapes, which the feature
        tables' lookups defeat; left unbuilt, the feature embeddings would not be loaded.
        """
        self.build_for_inference()

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, for saving."""
        config = super().get_config()
        config.update(
            user_cardinalities=list(self.user_cardinalities),
            user_dense=self.user_dense_width,
            item_cardinalities=list(self.item_cardinalities),
            item_dense=self.item_dense_width,
            feature_dim=self.feature_dim,
            dropout=self.dropout,
        )
        return config


def build_feature_model(
    users: Vocabulary,
    items: Vocabulary,
    tables: SideTables,
    *,
    feature_dim: int,
    dropout: float,
    rated: tuple[np.ndarray, np.ndarray] | None = None,
    **kwargs: Any,
) -> tuple[FeatureRankingModel, dict[str, Any]]:
    """Encode the side tables against the vocabularies and build the model holding them.

    Returns:
        The model (feature tables loaded) and the ``features`` entry of the bundle's metadata:
        each side's source, coverage, columns, categories and normalisation statistics.

    ``rated``: the training pairs' (user rows, movie rows), to add each side's ``rated``
    block (:func:`batchrank.features.with_rated`).
    """
    user = encode_side(tables.user, users) if tables.user is not None else None
    item = encode_side(tables.item, items) if tables.item is not None else None
    if rated is not None:
        u, i = rated
        user = with_rated(user, u, i, users.size, items.size)
        item = with_rated(item, i, u, items.size, users.size)
    model = FeatureRankingModel(
        users.size,
        items.size,
        user_cardinalities=user.cardinalities if user else (),
        user_dense=user.dense.shape[1] if user else 0,
        item_cardinalities=item.cardinalities if item else (),
        item_dense=item.dense.shape[1] if item else 0,
        feature_dim=feature_dim,
        dropout=dropout,
        **kwargs,
    )
    model.set_features(user, item)
    meta = {side: enc.to_dict() for side, enc in (("user", user), ("item", item)) if enc}
    return model, meta
