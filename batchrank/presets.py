"""Training presets: typed, frozen hyper-parameters.

``seed`` is the tutorial's recipe exactly. ``default`` is the same model family made better:
bias terms and a global offset, L2 on the embeddings, Adam, and early stopping on a validation
slice of the training data that restores the best weights. ``features`` adds side features
(docs/features.md): the MovieLens (or user-supplied) user and movie tables, and each user's rated
movies / each movie's raters from the training split, with dropout on the first layer's input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from batchrank.errors import ConfigError

__all__ = ["PRESETS", "TrainConfig", "preset"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    name: str
    """The preset's name, recorded in the bundle."""
    embedding_dim: int = 32
    """Width of the user and movie embeddings."""
    hidden_units: tuple[int, ...] = (256, 64)
    """Widths of the relu Dense layers (the first acts on the concatenated embeddings)."""
    bias_terms: bool = False
    """Per-user and per-movie biases plus a global offset."""
    l2: float = 0.0
    """L2 penalty on embeddings and biases."""
    optimizer: Literal["adagrad", "adam"] = "adagrad"
    """Optimizer name."""
    learning_rate: float = 0.1
    """Optimizer learning rate."""
    epochs: int = 5
    """Maximum number of epochs."""
    batch_size: int = 1000
    """Training batch size."""
    test_fraction: float = 0.2
    """Share of ratings held out for the test RMSE (shuffled split)."""
    seed: int = 42
    """Seed of the split, the initialisation and the shuffling."""
    validation_fraction: float = 0.0
    """Share of the training split used for early stopping (0 disables it)."""
    patience: int = 0
    """Epochs without validation improvement before stopping."""
    oov_rate: float = 0.0
    """Share of training rows whose user or movie is replaced by the OOV row, so it learns."""
    features: bool = False
    """Side features of users and movies beside the id embeddings (see docs/features.md)."""
    feature_dim: int = 8
    """Width of each categorical side feature's embedding."""
    dropout: float = 0.0
    """Dropout on the first Dense layer's input while training (0 for none)."""
    rated: bool = False
    """Add each user's rated movies and each movie's raters (training split) as features."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            # 0 trains on everything (production retrains, or a separate test file)
            raise ConfigError(f"test fraction must be in [0, 1); received {self.test_fraction}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(
                f"validation fraction must be in [0, 1); received {self.validation_fraction}"
            )
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1; received {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1; received {self.batch_size}")
        if self.feature_dim < 1:
            raise ConfigError(f"feature dim must be >= 1; received {self.feature_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); received {self.dropout}")
        if self.optimizer not in ("adagrad", "adam"):
            raise ConfigError(f"optimizer must be adagrad or adam; received {self.optimizer!r}")

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, for the bundle's metadata."""
        d = asdict(self)
        d["hidden_units"] = list(self.hidden_units)
        # fields added with side features are recorded only when set, so the settings of a
        # bundle trained before them (compared by `retrain = "if-data-changed"`) still match
        if not self.features:
            for name in _LATER_FIELDS:
                if d[name] == _DEFAULTS[name]:
                    del d[name]
        return d


_LATER_FIELDS = ("features", "feature_dim", "dropout", "rated")
_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


_DEFAULT = TrainConfig(
    name="default",
    bias_terms=True,
    l2=3e-4,
    optimizer="adam",
    learning_rate=1e-3,
    epochs=40,
    batch_size=256,
    validation_fraction=0.1,
    patience=3,
    oov_rate=0.01,
)

PRESETS: dict[str, TrainConfig] = {
    "seed": TrainConfig(name="seed"),
    "default": _DEFAULT,
    # default's settings; tried variations are in docs/features.md
    "features": replace(_DEFAULT, name="features", features=True, dropout=0.2, rated=True),
}


def preset(name: str) -> TrainConfig:
    """Look up a preset by name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; expected one of {', '.join(sorted(PRESETS))}"
        ) from None
