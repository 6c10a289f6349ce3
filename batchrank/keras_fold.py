"""Recognising the tutorial's shape in a Keras model, and folding it into batchrank's own.

Used by :mod:`batchrank.importer`. A model is folded only when its layers have the shape (two
embeddings, concatenated, relu Dense layers, one linear output) *and* a numerical check on
random rows agrees with the model to :data:`TOLERANCE`: which embedding is the user's and the
concatenation order are tried, never guessed.
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import numpy as np

__all__ = [
    "TOLERANCE",
    "call_model",
    "fold",
    "folded_model",
    "functional_inputs",
    "leaf_layers",
    "nested_models",
    "tutorial_shape",
]

PROBE_ROWS = 256
TOLERANCE = 1e-5
"""Largest difference (label units) between the model and its folded or reloaded form."""


def call_model(model: Any, inputs: tuple[str, str], u: np.ndarray, i: np.ndarray) -> np.ndarray:
    """The model's output for index arrays, as numpy."""
    out = model({inputs[0]: u.astype(np.int32), inputs[1]: i.astype(np.int32)}, training=False)
    return np.asarray(out)


def functional_inputs(model: Any) -> list[str] | None:
    """Input names of a functional model (None for a subclassed model)."""
    try:
        tensors = model.inputs
    except (AttributeError, ValueError):
        return None
    if not tensors:
        return None
    if isinstance(tensors, dict):
        return list(tensors)
    return [str(getattr(t, "name", "")).split(":")[0] for t in tensors]


def leaf_layers(model: Any) -> list[Any]:
    """Leaf layers in the order each model lists them (nested models and Sequentials walked)."""
    from batchrank._backend import keras_module

    keras = keras_module()
    out: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(leaf_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(layer)
    return out


def tutorial_shape(model: Any) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """(two embedding tables, Dense (kernel, bias) stack) when the layers have the tutorial's
    shape, else raise ValueError saying why not (the model then runs on the generic path)."""
    from batchrank._backend import keras_module

    keras = keras_module()
    relu = keras.activations.relu
    linear = keras.activations.linear
    tables: list[np.ndarray] = []
    dense: list[Any] = []
    for layer in leaf_layers(model):
        if isinstance(layer, keras.layers.Embedding):
            if dense:
                raise ValueError("an embedding after a Dense layer")
            tables.append(np.asarray(layer.embeddings.value, np.float32))
        elif isinstance(layer, keras.layers.Dense):
            if not layer.use_bias:
                raise ValueError(f"Dense layer {layer.name} has no bias")
            dense.append(layer)
        elif isinstance(layer, keras.layers.Concatenate):
            continue
        elif layer.weights:
            raise ValueError(f"layer {layer.name} ({type(layer).__name__}) is not foldable")
    if len(tables) != 2 or len(dense) < 2:
        raise ValueError("not two embeddings and a Dense stack")
    if tables[0].shape[1] != tables[1].shape[1]:
        raise ValueError("embeddings of different widths")
    *hidden, last = dense
    if any(layer.activation is not relu for layer in hidden) or last.activation is not linear:
        raise ValueError("hidden activations are not relu, or the output is not linear")
    stack = [
        (np.asarray(d.kernel.value, np.float32), np.asarray(d.bias.value, np.float32))
        for d in dense
    ]
    if stack[0][0].shape[0] != 2 * tables[0].shape[1] or stack[-1][0].shape[1] != 1:
        raise ValueError("the first Dense layer does not take the concatenation")
    return tables, stack


def _forward(
    e_u: np.ndarray, e_i: np.ndarray, stack: list[tuple[np.ndarray, np.ndarray]], user_first: bool
) -> Any:
    def fn(u: np.ndarray, i: np.ndarray) -> np.ndarray:
        parts = [e_u[u], e_i[i]] if user_first else [e_i[i], e_u[u]]
        h = np.concatenate(parts, axis=1).astype(np.float64)
        for n, (w, b) in enumerate(stack):
            h = h @ w + b
            if n < len(stack) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]

    return fn


def fold(
    model: Any, inputs: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]] | None:
    """(user table, item table, Dense stack in user-first order) when the model is verified to
    be the tutorial's computation, else None."""
    try:
        tables, stack = tutorial_shape(model)
    except ValueError:
        return None
    rng = np.random.default_rng(0)
    d = tables[0].shape[1]
    for (a, b), user_first in ((p, f) for p in permutations((0, 1)) for f in (True, False)):
        e_u, e_i = tables[a], tables[b]
        u = rng.integers(0, e_u.shape[0], PROBE_ROWS)
        i = rng.integers(0, e_i.shape[0], PROBE_ROWS)
        want = call_model(model, inputs, u, i).reshape(-1)
        got = _forward(e_u, e_i, stack, user_first)(u, i)
        if np.allclose(got, want, rtol=0, atol=TOLERANCE):
            if not user_first:  # reorder the first kernel's rows to [user; item]
                w0, b0 = stack[0]
                stack = [(np.concatenate([w0[d:], w0[:d]]), b0), *stack[1:]]
            return e_u, e_i, stack
    return None


def folded_model(
    e_u: np.ndarray, e_i: np.ndarray, stack: list[tuple[np.ndarray, np.ndarray]], rows: Any
) -> Any:
    from batchrank.model import RankingModel

    zero = np.zeros(1, np.int32)
    u_rows, i_rows = (np.concatenate([zero, r]) for r in rows)
    out = RankingModel(
        len(u_rows),
        len(i_rows),
        embedding_dim=e_u.shape[1],
        hidden_units=[w.shape[1] for w, _ in stack[:-1]],
    )
    out.build_for_inference()
    out.user_embedding.embeddings.assign(e_u[u_rows])
    out.item_embedding.embeddings.assign(e_i[i_rows])
    for layer, (w, b) in zip([*out.hidden_layers, out.output_layer], stack, strict=True):
        layer.kernel.assign(w)
        layer.bias.assign(b)
    return out


def nested_models(model: Any) -> list[Any]:
    """Nested models (Sequentials included) inside ``model``."""
    from batchrank._backend import keras_module

    keras = keras_module()
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return [m for layer in inner for m in (layer, *nested_models(layer))]
