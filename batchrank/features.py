"""Side features: per-user and per-movie tables, checked, typed and encoded per vocabulary row.

A feature table has one id column (the ratings' user or movie column name) and any number of
feature columns, typed from the file:

- **categorical**: text or boolean columns (and any column named in ``categorical``). Each
  distinct value seen gets a row of a learned embedding; row 0 is reserved for a missing value,
  an id absent from the table, and the OOV row.
- **numeric**: integer or float columns (in a CSV file: mostly numbers), normalised with the
  training table's mean and standard deviation (both stored in the bundle); a missing value
  (an empty cell) becomes the mean (0 after normalising), NaN or infinity is refused.
- **multi-hot**: list-of-text columns (Parquet), one 0/1 slot per distinct tag.

Features are constant per id, so the encoded tables are indexed by vocabulary row and the model
looks them up by index (see :mod:`batchrank.feature_model`): the scorer needs no feature file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from batchrank.errors import DataError
from batchrank.vocab import Vocabulary, coerce_ids

__all__ = [
    "EncodedSide",
    "FeatureColumn",
    "FeatureTable",
    "check_table",
    "encode_side",
    "read_feature_table",
    "read_frame",
    "with_rated",
]

Kind = Literal["categorical", "numeric", "multi_hot", "rated"]
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_SPECIAL = ["nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"]


@dataclass(frozen=True)
class FeatureTable:
    """A checked feature table: unique, non-null ids and typed feature columns."""

    frame: pl.DataFrame
    """The id column first (named ``id``), then the feature columns."""
    kinds: dict[str, Kind]
    """Each feature column's kind."""
    source: str
    """Where it came from, for messages and the bundle's metadata."""


@dataclass(frozen=True)
class FeatureColumn:
    """One encoded column: its kind and what encoding it needs again (categories, stats)."""

    name: str
    kind: Kind
    categories: tuple[str, ...] = ()
    """Categorical values (row r + 1) or multi-hot tags (slot r)."""
    mean: float = 0.0
    std: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """For metadata.json."""
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "numeric":
            d.update(mean=self.mean, std=self.std)
        elif self.kind == "rated":
            d["width"] = len(self.categories)
        else:
            d["categories"] = list(self.categories)
        return d


@dataclass(frozen=True)
class EncodedSide:
    """The features of one side, one row per vocabulary row (row 0: the OOV row)."""

    columns: tuple[FeatureColumn, ...]
    codes: np.ndarray
    """int32 ``(rows, n_categorical)``: 0 for missing / unknown, r + 1 for category r."""
    dense: np.ndarray
    """float32 ``(rows, n_dense)``: normalised numerics, then multi-hot slots."""
    source: str
    covered: int
    """Vocabulary ids that have a row in the table."""
    cardinalities: tuple[int, ...] = field(default=())
    """Rows of each categorical embedding (categories + the reserved row)."""

    def to_dict(self) -> dict[str, Any]:
        """For metadata.json: the columns, their categories or statistics, the coverage."""
        return {
            "source": self.source,
            "covered_ids": self.covered,
            "columns": [c.to_dict() for c in self.columns],
        }


def _kind_of(dtype: pl.DataType) -> Kind | None:
    if dtype.is_numeric():
        return "numeric"
    if dtype in (pl.String, pl.Boolean, pl.Categorical):
        return "categorical"
    if isinstance(dtype, pl.List) and dtype.inner in (pl.String, pl.Categorical):
        return "multi_hot"
    return None


def read_frame(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: feature table not found (expected a .csv or .parquet file)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix in (".csv", ".tsv"):
            # every column read as text: typing is ours, so a stray word in a numeric column
            # is reported by row instead of turning the column into categories
            return pl.read_csv(
                path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=0
            )
    except pl.exceptions.NoDataError:
        raise DataError(f"{path}: feature table is empty") from None
    except Exception as e:  # polars raises many types for corrupt files
        from batchrank.errors import first_line

        raise DataError(f"{path}: cannot read feature table: {first_line(e)}") from e
    raise DataError(f"{path}: unknown feature table type {suffix!r}; expected .csv or .parquet")


def _text_kind(col: pl.Series) -> Kind:
    """CSV columns arrive as text: numeric when most non-empty values are numbers.

    "Most", not "all": a numeric column with a stray word must fail on that row (see
    :func:`_to_numeric`), not turn silently into categories.
    """
    values = col.str.strip_chars()
    present = values.is_not_null() & (values != "")
    numeric = (values.str.contains(_NUMBER) | values.str.to_lowercase().is_in(_SPECIAL)) & present
    return "numeric" if numeric.sum() * 2 > present.sum() else "categorical"


def _to_numeric(col: pl.Series, where: str) -> pl.Series:
    """A column as float64, nulls for empty cells; a non-number, NaN or infinity is refused."""
    if col.dtype == pl.String:
        text = col.str.strip_chars()
        text = pl.Series(col.name, text).set(text == "", None)  # type: ignore[arg-type]
        special = text.str.to_lowercase().is_in(_SPECIAL)
        bad = text.is_not_null() & ~text.str.contains(_NUMBER) & ~special
        if bad.any():
            row = int(bad.arg_true()[0])
            raise DataError(
                f"{where}: column `{col.name}` is numeric but row {row + 1} has {col[row]!r}; "
                "expected a number (or name the column with --categorical)"
            )
        values = text.cast(pl.Float64, strict=False)
    elif col.dtype.is_numeric():
        values = col.cast(pl.Float64)
    else:
        raise DataError(f"{where}: column `{col.name}` of type {col.dtype} cannot be numeric")
    arr = values.to_numpy()
    finite = np.isfinite(arr) | values.is_null().to_numpy()
    if not finite.all():
        row = int(np.argmin(finite))
        raise DataError(
            f"{where}: column `{col.name}` has {arr[row]} at row {row + 1}; expected a finite "
            "number (leave the cell empty for a missing value)"
        )
    return values


def read_feature_table(
    path: Path, id_column: str, *, categorical: tuple[str, ...] = ()
) -> FeatureTable:
    """Read and check a feature table file (CSV or Parquet); see :func:`check_table`."""
    return check_table(
        read_frame(path),
        id_column,
        categorical=categorical,
        where=str(path),
        from_text=path.suffix.lower() != ".parquet",
    )


def check_table(
    df: pl.DataFrame,
    id_column: str,
    *,
    categorical: tuple[str, ...] = (),
    where: str,
    from_text: bool = False,
) -> FeatureTable:
    """Check and type a feature table.

    Args:
        df: the table as read.
        id_column: its id column.
        categorical: columns to treat as categories whatever they hold (zip codes, say).
        where: the file, for messages.
        from_text: the columns were read as text (CSV): type each from its values.

    Raises:
        DataError: one line naming the file, column and row: no id column, a null or repeated
            id, no feature column, a non-number / NaN / infinity in a numeric column, a column
            of an unusable type, a column named in ``categorical`` that is absent.
    """
    if df.height == 0:
        raise DataError(f"{where}: feature table has no rows")
    if id_column not in df.columns:
        found = ", ".join(f"`{c}`" for c in df.columns)
        raise DataError(f"{where}: id column `{id_column}` missing; found {found}")
    for name in categorical:
        if name not in df.columns or name == id_column:
            raise DataError(f"{where}: feature column `{name}` missing")
    ids = df.get_column(id_column)
    if ids.null_count():
        row = int(ids.is_null().arg_true()[0])
        raise DataError(f"{where}: column `{id_column}` has a missing id at row {row + 1}")
    dup = ids.is_duplicated()
    if dup.any():
        rows = dup.arg_true()
        value = ids[int(rows[0])]
        second = int(rows[(ids.gather(rows) == value).arg_true()[1]])
        raise DataError(
            f"{where}: column `{id_column}` repeats id {value!r} (rows {int(rows[0]) + 1} and "
            f"{second + 1}); expected one row per id"
        )
    kinds: dict[str, Kind] = {}
    columns = [ids.alias("id")]
    for name in df.columns:
        if name == id_column:
            continue
        col = df.get_column(name)
        kind: Kind | None
        if name in categorical:
            kind = "categorical"
        elif col.dtype == pl.String and from_text:
            kind = _text_kind(col)
        else:
            kind = _kind_of(col.dtype)
        if kind is None:
            raise DataError(
                f"{where}: column `{name}` has type {col.dtype}; expected text (categorical), "
                "numbers (numeric) or lists of text (multi-hot)"
            )
        if kind == "numeric":
            col = _to_numeric(col, where)
        elif kind == "categorical":
            col = col.cast(pl.String)
        kinds[name] = kind
        columns.append(col)
    if not kinds:
        raise DataError(f"{where}: feature table has no feature column besides `{id_column}`")
    return FeatureTable(frame=pl.DataFrame(columns), kinds=kinds, source=where)


def _rows_of(table: FeatureTable, vocab: Vocabulary) -> np.ndarray:
    """For each table row, its vocabulary row (-1 when the id is not in the vocabulary)."""
    cast, _ = coerce_ids(
        table.frame.get_column("id").to_arrow(), vocab.kind, where=f"{table.source}: ids"
    )
    idx = vocab.lookup(cast)  # ids that do not parse as the vocabulary's kind are null: 0
    return np.where(idx > 0, idx, -1)


def encode_side(table: FeatureTable, vocab: Vocabulary) -> EncodedSide:
    """Encode a feature table against a vocabulary (statistics from the rows it covers).

    Raises:
        DataError: no id of the table is in the vocabulary (wrong file or id column).
    """
    rows = _rows_of(table, vocab)
    hit = rows >= 0
    if not hit.any():
        raise DataError(
            f"{table.source}: no id matches the {vocab.size - 1} ids of the ratings "
            "(wrong file, or wrong id column?)"
        )
    target, frame = rows[hit], table.frame.filter(pl.Series(hit))
    n = vocab.size
    cols: list[FeatureColumn] = []
    codes: list[np.ndarray] = []
    dense: list[np.ndarray] = []
    for name, kind in table.kinds.items():
        col = frame.get_column(name)
        if kind == "categorical":
            cats = tuple(sorted(col.drop_nulls().unique().to_list()))
            lookup = {c: r + 1 for r, c in enumerate(cats)}
            code = np.zeros(n, np.int32)
            code[target] = [lookup.get(v, 0) if v is not None else 0 for v in col.to_list()]
            cols.append(FeatureColumn(name, kind, categories=cats))
            codes.append(code)
        elif kind == "numeric":
            values = col.to_numpy().astype(np.float64)
            present = ~np.isnan(values)
            mean = float(values[present].mean()) if present.any() else 0.0
            std = float(values[present].std()) if present.sum() > 1 else 0.0
            std = std if std > 0 else 1.0
            out = np.zeros(n, np.float32)
            out[target] = np.where(present, (values - mean) / std, 0.0)
            cols.append(FeatureColumn(name, kind, mean=mean, std=std))
            dense.append(out[:, None])
        else:
            tags = tuple(sorted({t for v in col.drop_nulls().to_list() for t in v if t}))
            slot = {t: r for r, t in enumerate(tags)}
            hot = np.zeros((n, len(tags)), np.float32)
            for r, v in zip(target, col.to_list(), strict=True):
                for t in v or ():
                    if t in slot:
                        hot[r, slot[t]] = 1.0
            cols.append(FeatureColumn(name, kind, categories=tags))
            dense.append(hot)
    return EncodedSide(
        columns=tuple(cols),
        codes=np.stack(codes, axis=1) if codes else np.zeros((n, 0), np.int32),
        dense=np.concatenate(dense, axis=1) if dense else np.zeros((n, 0), np.float32),
        source=table.source,
        covered=int(hit.sum()),
        cardinalities=tuple(len(c.categories) + 1 for c in cols if c.kind == "categorical"),
    )


MAX_RATED_CELLS = 50_000_000
"""Largest users × movies grid the ``rated`` features may take (200 MB of float32)."""


def with_rated(
    side: EncodedSide | None, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int
) -> EncodedSide:
    """A side's features plus its ``rated`` block: for each row, the other side's ids it has
    training ratings with, weighted ``1 / sqrt(count)`` (SVD++'s implicit feedback).

    ``rows``, ``cols`` are the training pairs' indices on this side and the other (row 0, the
    OOV row, is never a column). Constant per id, so it folds like any side feature.

    Raises:
        ConfigError: the grid is larger than :data:`MAX_RATED_CELLS`.
    """
    from batchrank.errors import ConfigError

    if n_rows * (n_cols - 1) > MAX_RATED_CELLS:
        raise ConfigError(
            f"rated features need {n_rows} x {n_cols - 1} cells, more than {MAX_RATED_CELLS}; "
            "train a preset without them"
        )
    block = np.zeros((n_rows, n_cols - 1), np.float32)
    block[rows, cols - 1] = 1.0
    counts = block.sum(axis=1, keepdims=True)
    block /= np.sqrt(np.maximum(counts, 1.0))
    block[0] = 0.0  # the OOV row: nothing known
    column = FeatureColumn("rated", "rated", categories=tuple(str(c) for c in range(n_cols - 1)))
    if side is None:
        return EncodedSide(
            columns=(column,),
            codes=np.zeros((n_rows, 0), np.int32),
            dense=block,
            source="training ratings",
            covered=int((counts[1:, 0] > 0).sum()),
        )
    return EncodedSide(
        columns=(*side.columns, column),
        codes=side.codes,
        dense=np.concatenate([side.dense, block], axis=1),
        source=side.source,
        covered=side.covered,
        cardinalities=side.cardinalities,
    )
