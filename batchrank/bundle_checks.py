"""Integrity checks of a model bundle at load time, before a single pair is scored.

The fingerprint says the files are the ones the writer wrote; these checks say they fit
together: the embedding tables have one row per vocabulary id plus the OOV row (JAX clamps an
out-of-range index instead of failing, so a short table would score silently wrong), the Dense
layers chain, the output is one number, every value is finite, and the metadata the scorer
reads (label transform, rating scale, column names) has the expected shape. Each failure is
one :class:`~batchrank.errors.ModelError` line naming the file and what was expected. No Keras.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.errors import ModelError
from batchrank.vocab import Vocabulary

__all__ = ["COLUMN_KEYS", "check_metadata", "check_vocabulary", "check_weights", "titles_of"]

COLUMN_KEYS = ("user", "item", "rating", "title")
"""Keys of the metadata's ``columns`` entry: the training data's column names."""

_BIAS_KEYS = ("user_bias", "item_bias", "global_bias")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def check_metadata(meta: Mapping[str, Any], where: Path) -> None:
    """Check the metadata entries that determine scores or the scorer's defaults.

    Raises:
        ModelError: ``label_transform`` is missing or not an affine ``low < high`` pair of
            finite numbers, ``rating_scale`` disagrees with it, or ``columns`` is malformed.
    """
    lt = meta.get("label_transform")
    if not isinstance(lt, dict):
        raise ModelError(f"{where}: key `label_transform` missing; expected {{low, high}}")
    low, high = _number(lt.get("low")), _number(lt.get("high"))
    if low is None or high is None or not low < high:
        raise ModelError(
            f"{where}: `label_transform` low {lt.get('low')!r}, high {lt.get('high')!r}; "
            "expected finite numbers with low < high"
        )
    if lt.get("type", "affine") != "affine":
        raise ModelError(f"{where}: `label_transform` type {lt.get('type')!r}; expected 'affine'")
    scale = meta.get("rating_scale")
    if scale is not None and scale != [low, high]:
        raise ModelError(
            f"{where}: `rating_scale` {scale!r} disagrees with `label_transform` "
            f"({low:g}, {high:g})"
        )
    columns = meta.get("columns")
    if columns is not None and not (
        isinstance(columns, dict)
        and set(columns) == set(COLUMN_KEYS)
        and all(isinstance(v, str) and v for v in columns.values())
    ):
        raise ModelError(
            f"{where}: `columns` is {columns!r}; expected names for {', '.join(COLUMN_KEYS)}"
        )


def check_vocabulary(vocab: Vocabulary, where: Path, recorded_kind: object = None) -> None:
    """Ids unique, sorted, without nulls, and of the kind the metadata recorded.

    Raises:
        ModelError: naming the file and the first offending position.
    """
    ids = vocab.ids
    if ids.null_count:
        raise ModelError(f"{where}: {ids.null_count} null ids; expected none")
    if recorded_kind is not None and recorded_kind != vocab.kind:
        raise ModelError(
            f"{where}: ids are of kind {vocab.kind!r}; metadata records {recorded_kind!r}"
        )
    if len(ids) < 2:
        return
    ordered = pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))
    if not pc.all(ordered).as_py():
        pos = pc.index(ordered, False).as_py()
        raise ModelError(
            f"{where}: ids not sorted and unique at row {pos + 2} ({ids[pos + 1].as_py()!r}); "
            "expected ascending distinct ids"
        )


def _shape(arr: np.ndarray) -> str:
    return "(" + ", ".join(str(d) for d in arr.shape) + ")"


def check_weights(
    weights: Mapping[str, np.ndarray], n_users: int, n_items: int, where: Path
) -> None:
    """Check RankingModel arrays against the vocabulary sizes (rows include the OOV row).

    Raises:
        ModelError: an array is missing, unexpected, of another dtype or shape, or holds a
            non-finite value.
    """

    def need(name: str, shape: tuple[int | None, ...], why: str) -> np.ndarray:
        if name not in weights:
            raise ModelError(f"{where}: array `{name}` missing; expected {why}")
        arr = weights[name]
        if arr.dtype != np.float32:
            raise ModelError(f"{where}: array `{name}` has dtype {arr.dtype}; expected float32")
        if arr.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(arr.shape, shape, strict=False)
        ):
            want_text = "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"
            raise ModelError(
                f"{where}: array `{name}` has shape {_shape(arr)}; expected {want_text} ({why})"
            )
        return arr

    users = need("user_embedding", (n_users, None), f"{n_users - 1} users + the OOV row")
    dim = users.shape[1]
    need("item_embedding", (n_items, dim), f"{n_items - 1} movies + the OOV row")
    width, n = 2 * dim, 0
    while f"dense_{n}_kernel" in weights or n == 0:
        kernel = need(f"dense_{n}_kernel", (width, None), "the layer below's width")
        width = kernel.shape[1]
        need(f"dense_{n}_bias", (width,), f"dense_{n}'s width")
        n += 1
    need("rating_kernel", (width, 1), "the last hidden width, one output")
    need("rating_bias", (1,), "one output")
    expected = {"user_embedding", "item_embedding", "rating_kernel", "rating_bias"}
    expected |= {f"dense_{k}_{part}" for k in range(n) for part in ("kernel", "bias")}
    if any(k in weights for k in _BIAS_KEYS):
        need("user_bias", (n_users,), "one bias per user row")
        need("item_bias", (n_items,), "one bias per movie row")
        need("global_bias", (1,), "one global offset")
        expected |= set(_BIAS_KEYS)
    extra = sorted(set(weights) - expected)
    if extra:
        raise ModelError(
            f"{where}: unexpected array `{extra[0]}`; expected {', '.join(sorted(expected))}"
        )
    for name in sorted(expected):
        arr = weights[name]
        if not np.isfinite(arr).all():
            raise ModelError(f"{where}: array `{name}` holds non-finite values (nan or inf)")


def titles_of(table: pa.Table, where: Path, n: int) -> pa.Array | None:
    """The ``title`` column of ``items.parquet`` (strings, one per movie), or None."""
    if "title" not in table.column_names:
        return None
    titles = table.column("title").combine_chunks()
    if not (pa.types.is_string(titles.type) or pa.types.is_large_string(titles.type)):
        if titles.null_count != len(titles):
            raise ModelError(f"{where}: column `title` has type {titles.type}; expected string")
        titles = pc.cast(titles, pa.string())
    if len(titles) != n:
        raise ModelError(f"{where}: {len(titles)} titles for {n} movies")
    return titles
