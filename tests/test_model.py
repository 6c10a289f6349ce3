"""RankingModel: native .keras save / safe-mode load, config round trip, argument checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchrank._backend import keras_module

keras = keras_module()

from batchrank.model import RankingModel  # noqa: E402  (after the backend is chosen)

SMALL = {"embedding_dim": 4, "hidden_units": (8, 4)}


def _inputs(rng: np.random.Generator, num_users: int, num_items: int) -> dict[str, np.ndarray]:
    return {
        "user": rng.integers(0, num_users, size=64).astype(np.int32),
        "item": rng.integers(0, num_items, size=64).astype(np.int32),
    }


def _weights_equal(a: keras.Model, b: keras.Model) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))


@pytest.mark.parametrize("bias_terms", [False, True], ids=["seed-like", "bias-terms"])
def test_save_and_safe_load_give_the_same_predictions(
    tmp_path: Path, rng: np.random.Generator, bias_terms: bool
) -> None:
    model = RankingModel(11, 7, bias_terms=bias_terms, l2=1e-3, global_bias=0.6, **SMALL)
    model.build_for_inference()
    if bias_terms:
        # make the biases non-zero, so the round trip is seen to carry them
        biases = [w for w in model.weights if "_bias" in w.path]
        assert len(biases) == 3  # user, movie, global
        for w in biases:
            w.assign(rng.normal(size=w.shape).astype("float32"))
    x = _inputs(rng, 11, 7)
    before = np.asarray(model.predict(x, verbose=0))
    assert before.shape == (64, 1)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, RankingModel)
    assert loaded.bias_terms is bias_terms
    assert _weights_equal(model, loaded)
    np.testing.assert_allclose(np.asarray(loaded.predict(x, verbose=0)), before, rtol=1e-6)


def test_bias_terms_start_at_the_global_offset(rng: np.random.Generator) -> None:
    """Zero-initialised user / movie biases: the output is the Dense stack plus global_bias."""
    with_bias = RankingModel(5, 5, bias_terms=True, global_bias=0.75, **SMALL)
    with_bias.build_for_inference()
    names = sorted(w.path for w in with_bias.weights)
    assert any("user_bias" in n for n in names)
    assert any("item_bias" in n for n in names)
    assert any(n.endswith("global_bias") for n in names)
    without = RankingModel(5, 5, **SMALL)
    without.build_for_inference()
    assert not any("_bias" in w.path for w in without.weights)
    x = _inputs(rng, 5, 5)
    # copy the shared layers' weights, so only the bias terms differ
    for layer in ("user_embedding", "item_embedding", "dense_0", "dense_1", "rating"):
        without.get_layer(layer).set_weights(with_bias.get_layer(layer).get_weights())
    diff = np.asarray(with_bias.predict(x, verbose=0)) - np.asarray(without.predict(x, verbose=0))
    np.testing.assert_allclose(diff, 0.75, atol=1e-6)


@pytest.mark.parametrize("bias_terms", [False, True])
def test_get_config_round_trip(bias_terms: bool) -> None:
    model = RankingModel(
        31,
        17,
        embedding_dim=6,
        hidden_units=[16, 8, 4],
        bias_terms=bias_terms,
        l2=0.01,
        global_bias=0.4,
    )
    config = model.get_config()
    for key, value in {
        "num_users": 31,
        "num_items": 17,
        "embedding_dim": 6,
        "hidden_units": [16, 8, 4],
        "bias_terms": bias_terms,
        "l2": 0.01,
        "global_bias": 0.4,
    }.items():
        assert config[key] == value, key
    clone = RankingModel.from_config(config)
    assert clone.get_config() == config
    assert clone.hidden_units == (16, 8, 4)
    # also through Keras' generic (de)serialisation, as load_model does
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert isinstance(again, RankingModel)
    assert again.get_config() == config


def test_defaults_are_the_tutorials() -> None:
    model = RankingModel(3, 3)
    assert model.embedding_dim == 32
    assert model.hidden_units == (256, 64)
    assert model.bias_terms is False
    assert model.l2 == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_users": 0}, "num_users and num_items must be >= 1"),
        ({"num_items": -1}, "num_users and num_items must be >= 1"),
        ({"embedding_dim": 0}, "embedding_dim must be >= 1"),
        ({"hidden_units": ()}, "hidden_units must be positive"),
        ({"hidden_units": (8, 0)}, "hidden_units must be positive"),
        ({"l2": -0.1}, "l2 must be >= 0"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"num_users": 3, "num_items": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        RankingModel(**args)  # type: ignore[arg-type]


def test_unsafe_lambda_is_refused_by_safe_mode(tmp_path: Path) -> None:
    """The bundle loads with safe_mode=True: a model smuggling a lambda must not load."""
    inp = keras.Input(shape=(1,))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ValueError, match=r"(?i)unsafe|lambda|safe_mode"):
        keras.saving.load_model(path, safe_mode=True)
