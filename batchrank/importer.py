"""Bring your own model: a Keras model trained elsewhere becomes a bundle the scorer loads.

:func:`bundle_from_keras` takes a model that maps a user index and an item index to one rating
in label units (the Keras Recommenders ranking tutorial's ``RankingModel``, or any other) and
the ids its embedding tables cover, and writes an ordinary bundle (see :mod:`batchrank.imported`
for what it records):

- **folded**: a model with the tutorial's shape (two embeddings, concatenated, a Dense stack
  with relu hidden layers and one linear output; subclassed or functional) is rewritten as
  batchrank's own :class:`~batchrank.model.RankingModel`, its tables permuted into batchrank's
  vocabulary layout (row 0 = unknown ids, then ids in sorted order). Which embedding is the
  user's and the concatenation order are not guessed: each candidate is checked numerically
  against the model, and only an exact match (1e-5) is folded.
- **generic**: any other model (or ``predictor="generic"``) is saved as it is and run through
  its stateless call under ``jax.jit``; the vocabularies record each id's embedding row.
"""

from __future__ import annotations

import datetime as dt
import platform
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.bundle import Bundle, LabelTransform
from batchrank.errors import ConfigError, ModelError, first_line
from batchrank.imported import IMPORTED, resolve_refs
from batchrank.keras_fold import (
    PROBE_ROWS,
    TOLERANCE,
    call_model,
    fold,
    folded_model,
    functional_inputs,
    leaf_layers,
    nested_models,
)
from batchrank.vocab import Vocabulary, coerce_ids, id_kind_of

__all__ = ["IdsMode", "bundle_from_keras", "load_keras_model"]

IdsMode = Literal["index", "vocabulary"]


def load_keras_model(path: str | Path, custom_objects: Sequence[str] = ()) -> Any:
    """Load a ``.keras`` file with ``safe_mode=True``; ``custom_objects``: ``module:Class``."""
    from batchrank._backend import keras_module

    keras = keras_module()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: Keras model file not found")
    _check_archive(path)
    custom = resolve_refs(list(custom_objects), "--custom-objects")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False, custom_objects=custom)
    except Exception as e:
        text = first_line(e)
        import re

        missing = re.search(r"Could not locate (?:class|function) '([^']+)'", str(e))
        if missing:
            name = missing.group(1)
            raise ModelError(
                f"{path}: the model uses `{name}`, which Keras does not know; pass "
                f"--custom-objects MODULE:{name} (the module that defines it)"
            ) from e
        raise ModelError(f"{path}: cannot load the Keras model: {text}") from e


def _check_archive(path: Path) -> None:
    """A ``.keras`` file is a zip with a ``config.json``; Keras itself reports a truncated or
    empty one as "File not found", which sends the user looking for the wrong problem."""
    import zipfile

    if path.suffix.lower() in (".h5", ".hdf5"):
        return  # a legacy HDF5 model: Keras reads it itself
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, EOFError) as e:
        raise ModelError(
            f"{path}: not a readable .keras archive ({first_line(e)}; truncated or not "
            "written by model.save?)"
        ) from e
    except OSError as e:
        raise ModelError(f"{path}: cannot read the Keras model file ({e.strerror or e})") from e
    if "config.json" not in names:
        raise ModelError(f"{path}: a zip without config.json; expected a Keras 3 .keras file")


def _ids(values: Iterable[Any] | pa.Array, what: str, mode: IdsMode) -> tuple[pa.Array, np.ndarray]:
    """The vocabulary (sorted ids) and each sorted id's embedding row."""
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(list(values))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) == 0:
        raise ConfigError(f"{what}: no ids given")
    where = f"{what}"
    try:
        kind = id_kind_of(arr, where=where)
    except Exception as e:
        raise ConfigError(str(e)) from e
    ids, _ = coerce_ids(arr, kind, where=where)
    if ids.null_count:
        raise ConfigError(f"{what}: {ids.null_count} null ids; expected none")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise ConfigError(f"{what}: id {dup!r} is listed twice; expected distinct ids")
    order = pc.sort_indices(ids).to_numpy()
    if mode == "index":
        if kind != "int":
            raise ConfigError(f"{what}: ids must be integers with ids='index' (id = row)")
        raw = ids.to_numpy()
        if raw.min() < 0 or raw.max() > np.iinfo(np.int32).max:
            bad = int(raw.min() if raw.min() < 0 else raw.max())
            raise ConfigError(f"{what}: id {bad} cannot be an embedding row (ids='index')")
        rows = raw[order].astype(np.int32)
    else:
        rows = (order + 1).astype(np.int32)
    return ids.take(pa.array(order)), rows


def _check_signature(model: Any, inputs: tuple[str, str], u: int, i: int) -> None:
    """Two named inputs, one number per pair out; else one line saying what differs."""
    names = functional_inputs(model)
    if names is not None:
        if len(names) != 2:
            raise ModelError(
                f"the model takes {len(names)} input(s) ({', '.join(names)}); expected two, a "
                "user index and an item index"
            )
        if set(names) != set(inputs):
            raise ModelError(
                f"the model's inputs are {', '.join(names)}; expected {inputs[0]}, {inputs[1]} "
                "(pass inputs=(USER, ITEM) / --inputs USER,ITEM)"
            )
    probe = np.array([u, u], np.int32), np.array([i, i], np.int32)
    try:
        out = call_model(model, inputs, *probe)
    except Exception as e:
        raise ModelError(
            f"the model does not take {{{inputs[0]!r}, {inputs[1]!r}}} index inputs: "
            f"{first_line(e)}"
        ) from e
    if out.shape not in ((2,), (2, 1)):
        raise ModelError(
            f"the model's output has shape {tuple(out.shape)} for 2 pairs; expected (2, 1) or "
            "(2,): one rating per pair"
        )
    if not np.issubdtype(out.dtype, np.floating):
        raise ModelError(f"the model's output has dtype {out.dtype}; expected floats")


def _check_rows(rows: np.ndarray, table_rows: int, what: str, mode: IdsMode, ids: pa.Array) -> None:
    if mode == "vocabulary" and len(rows) + 1 != table_rows:
        raise ModelError(
            f"{what}: {len(rows)} ids for an embedding of {table_rows} rows; expected "
            f"{table_rows - 1} ids with ids='vocabulary' (row 0 is the unknown row)"
        )
    beyond = rows >= table_rows
    if beyond.any():
        bad = ids[int(np.argmax(beyond))].as_py()
        raise ModelError(
            f"{what}: id {bad!r} is beyond the embedding's {table_rows} rows (ids='index': "
            "the id is the row); list only the ids the table covers"
        )


def _class_refs(model: Any) -> list[str]:
    """``module:Class`` of every non-Keras class in the model, for reloading it elsewhere."""
    refs = set()
    for obj in [model, *leaf_layers(model), *nested_models(model)]:
        cls = type(obj)
        if cls.__module__.split(".")[0] == "keras":
            continue
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            raise ModelError(
                f"class {cls.__qualname__} is defined in {cls.__module__}, which the scorer "
                "cannot import: define it in a module (the generic path reloads the model "
                "at scoring time), or give the model the tutorial's shape to fold it"
            )
        refs.add(f"{cls.__module__}:{cls.__qualname__}")
    return sorted(refs)


def _saved_copy(
    model: Any,
    refs: list[str],
    folder: Path,
    inputs: tuple[str, str],
    rows: tuple[np.ndarray, np.ndarray],
) -> Any:
    """Save the model, reload it as the scorer will, and check it still predicts the same."""
    from batchrank._backend import keras_module

    keras = keras_module()
    path = folder / "model.keras"
    try:
        model.save(path)
    except Exception as e:
        raise ModelError(
            f"cannot save the model for the generic path: {first_line(e)} (a subclassed model "
            "needs get_config(); see docs/byom.md)"
        ) from e
    try:
        custom = resolve_refs(refs, "model")
        loaded = keras.saving.load_model(path, safe_mode=True, compile=False, custom_objects=custom)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"the saved model does not load back: {first_line(e)}") from e
    rng = np.random.default_rng(0)
    u, i = (r[rng.integers(0, len(r), PROBE_ROWS)] for r in rows)
    before, after = call_model(model, inputs, u, i), call_model(loaded, inputs, u, i)
    if not np.allclose(before, after, rtol=0, atol=TOLERANCE):
        raise ModelError("the saved model predicts differently once reloaded (its get_config?)")
    return loaded


def _titles(items: pa.Array, titles: Mapping[Any, str] | Any | None) -> pa.Array | None:
    if titles is None:
        return None
    if not isinstance(titles, Mapping | pa.Table) and hasattr(titles, "__arrow_c_stream__"):
        # a polars or pandas DataFrame (or any Arrow stream): the notebook user's titles table
        titles = pa.table(titles)
    if isinstance(titles, pa.Table):
        if not {"movie_id", "title"} <= set(titles.column_names):
            raise ConfigError(
                f"titles: columns `movie_id`, `title` expected; found {titles.column_names}"
            )
        keys = titles.column("movie_id").combine_chunks()
        values = titles.column("title").combine_chunks()
    elif isinstance(titles, Mapping):
        keys, values = pa.array(list(titles)), pa.array([str(t) for t in titles.values()])
    else:
        raise ConfigError(
            f"titles: expected a mapping of item id -> title or a table with `movie_id` and "
            f"`title` (pyarrow, polars, pandas); received {type(titles).__name__}"
        )
    keys, _ = coerce_ids(keys, id_kind_of(items, where="item_ids"), where="titles: `movie_id`")
    pos = pc.index_in(items, value_set=keys)
    return pc.take(pc.cast(values, pa.string()), pos)


def bundle_from_keras(
    model: Any,
    out: str | Path,
    *,
    user_ids: Iterable[Any] | pa.Array,
    item_ids: Iterable[Any] | pa.Array,
    ids: IdsMode = "index",
    inputs: tuple[str, str] = ("user_id", "movie_id"),
    rating_scale: tuple[float, float] = (1.0, 5.0),
    titles: Mapping[Any, str] | Any | None = None,
    predictor: Literal["auto", "folded", "generic"] = "auto",
    source: str | None = None,
) -> Path:
    """Write a bundle for a Keras model mapping (user index, item index) to a rating label.

    Args:
        model: a Keras 3 model on the JAX backend; labels are ``(rating - low) / (high - low)``.
        out: the bundle folder to write (atomically).
        user_ids, item_ids: the ids the embedding tables cover. ``ids="index"``: each id is
            its own embedding row (the tutorial: ``range(1, users_count + 1)``); other ids are
            unknown. ``ids="vocabulary"``: row r + 1 holds the r-th id, row 0 is the unknown
            row, as in batchrank's own bundles.
        inputs: the model's user and item input names (the tutorial's dict keys).
        rating_scale: ``(low, high)`` of the labels' affine transform.
        titles: item id -> title, as a mapping or a table with ``movie_id`` and ``title``
            (pyarrow, or anything with the Arrow stream protocol: polars, pandas >= 2.2).
        predictor: ``auto`` folds a model of the tutorial's shape, else runs it generically;
            ``folded`` fails unless it can fold; ``generic`` never folds.
        source: what to record as the model's origin (default: its class).

    Returns:
        The bundle's path. Unknown ids use row 0 with ``--unknown oov`` (skipped by default).

    Raises:
        ModelError: the model does not take two index inputs, does not return one rating per
            pair, does not fit the ids, or (generic) cannot be saved and reloaded.
        ConfigError: bad ids, scale or options.
    """
    if ids not in ("index", "vocabulary"):
        raise ConfigError(f"ids must be 'index' or 'vocabulary'; received {ids!r}")
    if predictor not in ("auto", "folded", "generic"):
        raise ConfigError(f"predictor must be auto, folded or generic; received {predictor!r}")
    if len(inputs) != 2 or inputs[0] == inputs[1] or not all(isinstance(n, str) for n in inputs):
        raise ConfigError(f"inputs must be two distinct names; received {inputs!r}")
    inputs = (inputs[0], inputs[1])
    low, high = (float(v) for v in rating_scale)
    if not (np.isfinite([low, high]).all() and low < high):
        raise ConfigError(f"rating scale must be MIN,MAX with MIN < MAX; received {low},{high}")
    users, u_rows = _ids(user_ids, "user_ids", ids)
    items, i_rows = _ids(item_ids, "item_ids", ids)
    _check_signature(model, inputs, int(u_rows[0]), int(i_rows[0]))
    folded = None if predictor == "generic" else fold(model, inputs)
    if predictor == "folded" and folded is None:
        raise ModelError("the model does not have the tutorial's shape; it cannot be folded")
    kind = "folded" if folded is not None else "generic"
    entry: dict[str, Any] = {"from": "keras", "ids": ids, "inputs": list(inputs)}
    entry["predictor"] = kind
    entry["class"] = f"{type(model).__module__}:{type(model).__qualname__}"
    user_vocab = Vocabulary(ids=users, kind=id_kind_of(users, where="user_ids"))
    item_vocab = Vocabulary(ids=items, kind=id_kind_of(items, where="item_ids"))
    with tempfile.TemporaryDirectory(prefix=".batchrank-import-") as scratch:
        if folded is not None:
            e_u, e_i, stack = folded
            _check_rows(u_rows, e_u.shape[0], "user_ids", ids, users)
            _check_rows(i_rows, e_i.shape[0], "item_ids", ids, items)
            bundle_model, rows = folded_model(e_u, e_i, stack, (u_rows, i_rows)), None
            entry["custom_objects"] = []
        else:
            refs = _class_refs(model)
            bundle_model, rows = (
                _saved_copy(model, refs, Path(scratch), inputs, (u_rows, i_rows)),
                (u_rows, i_rows),
            )
            entry["custom_objects"] = refs
        bundle = Bundle(
            model=bundle_model,
            users=user_vocab,
            items=item_vocab,
            titles=_titles(items, titles),
            metadata=_metadata(entry, LabelTransform(low, high), user_vocab, item_vocab, source),
            rows=rows,
        )
        return bundle.save(Path(out))


def _metadata(
    entry: dict[str, Any],
    transform: LabelTransform,
    users: Vocabulary,
    items: Vocabulary,
    source: str | None,
) -> dict[str, Any]:
    import jax
    import keras

    import batchrank

    return {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "preset": "imported",
        IMPORTED: entry,
        "rating_scale": [transform.low, transform.high],
        "label_transform": transform.to_dict(),
        "data": {
            "source": source or f"keras:{entry['class']}",
            "users": len(users),
            "movies": len(items),
            "user_id_kind": users.kind,
            "movie_id_kind": items.kind,
        },
        "metrics": {},
        "versions": {
            "batchrank": batchrank.__version__,
            "keras": keras.__version__,
            "jax": jax.__version__,
            "python": platform.python_version(),
        },
    }
