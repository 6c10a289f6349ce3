"""What an imported bundle (``batchrank import``, :func:`batchrank.bundle_from_keras`) records,
read back without Keras.

An imported bundle is an ordinary bundle (same files, same fingerprint, same load-time checks)
whose metadata has an ``imported`` entry, inside the fingerprint because it changes scores:

- ``predictor``: ``folded`` (the model had the tutorial's shape and was rewritten as
  batchrank's own :class:`~batchrank.model.RankingModel`, ``weights.npz`` included) or
  ``generic`` (the user's model itself, run through its stateless call);
- ``inputs``: the names of the model's user and item inputs (generic path);
- ``ids``: ``index`` (raw id = embedding row) or ``vocabulary`` (row r + 1 holds the r-th id);
- ``custom_objects``: ``module:Class`` references the generic path imports to reload the model.

A generic bundle's ``users.parquet`` and ``items.parquet`` carry a ``row`` column: the model's
embedding row of each id. Unknown ids (``--unknown oov``) use row 0.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from batchrank.errors import ModelError, first_line

__all__ = [
    "DEFAULT_INPUTS",
    "IMPORTED",
    "ROW_COLUMN",
    "custom_objects_of",
    "inputs_of",
    "resolve_refs",
    "rows_of",
    "with_rows",
]

IMPORTED = "imported"
"""The metadata key of imported bundles."""
DEFAULT_INPUTS = ("user", "item")
"""Input names of batchrank's own RankingModel."""
ROW_COLUMN = "row"
"""Vocabulary column of imported generic bundles: the model's embedding row of each id."""


def _entry(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    entry = meta.get(IMPORTED)
    return entry if isinstance(entry, dict) else None


def inputs_of(meta: Mapping[str, Any], where: object) -> tuple[str, str]:
    """The (user, item) input names the bundle's Keras model takes."""
    entry = _entry(meta)
    if entry is None or entry.get("predictor") != "generic":
        return DEFAULT_INPUTS
    names = entry.get("inputs")
    if not (
        isinstance(names, list)
        and len(names) == 2
        and all(isinstance(n, str) and n for n in names)
        and names[0] != names[1]
    ):
        raise ModelError(f"{where}: `imported.inputs` is {names!r}; expected two distinct names")
    return names[0], names[1]


def resolve_refs(refs: list[str] | tuple[str, ...], where: object) -> dict[str, Any]:
    """``module:Class`` references -> Keras ``custom_objects`` (by class and registered name).

    Modules are imported from the installed packages or the current folder.
    """
    out: dict[str, Any] = {}
    for ref in refs:
        module_name, sep, qualname = str(ref).partition(":")
        if not sep or not module_name or not qualname:
            raise ModelError(f"{where}: custom object {ref!r}; expected module:Class")
        added = os.getcwd() not in sys.path
        if added:
            sys.path.append(os.getcwd())
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except Exception as e:  # ImportError, AttributeError, or the module's own failure
            raise ModelError(
                f"{where}: cannot import custom object {ref!r}: {first_line(e)}"
            ) from e
        finally:
            if added:
                sys.path.remove(os.getcwd())
        out[qualname.rsplit(".", 1)[-1]] = obj
        registered = _registered_name(obj)
        if registered:
            out[registered] = obj
    return out


def _registered_name(obj: Any) -> str | None:
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return str(keras.saving.get_registered_name(obj))
    except Exception:
        return None


def custom_objects_of(meta: Mapping[str, Any], where: Path) -> dict[str, Any] | None:
    """The ``custom_objects`` to load a generic imported bundle's model with, or None."""
    entry = _entry(meta)
    if entry is None:
        return None
    refs = entry.get("custom_objects", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ModelError(f"{where}: `imported.custom_objects` is {refs!r}; expected a list")
    return resolve_refs(refs, where) or None


def with_rows(table: pa.Table, rows: tuple[np.ndarray, np.ndarray] | None, n: int) -> pa.Table:
    """``table`` with the ``row`` column of vocabulary ``n`` (0 users, 1 items) when given."""
    if rows is None:
        return table
    return table.append_column(ROW_COLUMN, pa.array(rows[n], pa.int32()))


def rows_of(path: Path, users: pa.Table, items: pa.Table) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``row`` columns of both vocabularies (imported generic bundles), checked, or None."""
    found = [ROW_COLUMN in t.column_names for t in (users, items)]
    if not any(found):
        return None
    out = []
    for table, name in ((users, "users.parquet"), (items, "items.parquet")):
        if ROW_COLUMN not in table.column_names:
            raise ModelError(
                f"{path / name}: column `{ROW_COLUMN}` missing; the other file has one"
            )
        col = table.column(ROW_COLUMN).combine_chunks()
        if not pa.types.is_integer(col.type) or col.null_count:
            raise ModelError(
                f"{path / name}: column `{ROW_COLUMN}` has type {col.type}; expected int32 rows"
            )
        rows = col.to_numpy().astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() > np.iinfo(np.int32).max):
            raise ModelError(f"{path / name}: column `{ROW_COLUMN}` holds a row outside int32")
        out.append(rows.astype(np.int32))
    return out[0], out[1]
