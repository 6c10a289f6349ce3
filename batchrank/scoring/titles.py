"""The title stage: join movie titles onto ranked rows, and make them safe for spreadsheets."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from batchrank.scoring.schema import LONG_COLUMNS

__all__ = ["FORMULA_TRIGGERS", "escape_formulas", "join_titles"]


def _key_type(left: pa.DataType, right: pa.DataType) -> pl.DataType:
    if pa.types.is_integer(left) and pa.types.is_integer(right):
        return pl.Int64()
    return pl.String()


def join_titles(table: pa.Table, titles: pa.Table | None) -> tuple[pa.Table, int]:
    """Left-join movie titles onto ranked rows, keeping the row order.

    Args:
        table: Ranked rows with ``user_id, rank, movie_id, stars, score``.
        titles: ``movie_id, title``; the first title of a repeated ``movie_id`` wins. Keys
            are compared as int64 when both sides are integers, else as strings.
            ``None``: every title is null.

    Returns:
        The rows with columns ``user_id, rank, movie_id, title, stars, score`` (``title`` a
        string, null when unknown) and the number of rows with a null title.
    """
    missing = [
        c for c in ("user_id", "rank", "movie_id", "stars", "score") if c not in table.schema.names
    ]
    if missing:
        raise ValueError(f"ranked rows lack columns {missing}; have {table.schema.names}")
    left = table.select(["user_id", "rank", "movie_id", "stars", "score"])
    schema = pa.schema(
        [
            left.schema.field("user_id"),
            left.schema.field("rank"),
            left.schema.field("movie_id"),
            pa.field("title", pa.string()),
            left.schema.field("stars"),
            left.schema.field("score"),
        ]
    )
    if titles is None or left.num_rows == 0:
        title = pa.nulls(left.num_rows, pa.string())
        out = pa.Table.from_arrays(
            [left.column(c) if c != "title" else title for c in LONG_COLUMNS], schema=schema
        )
        return out, left.num_rows
    for c in ("movie_id", "title"):
        if c not in titles.schema.names:
            raise ValueError(f"titles lack column {c!r}; have {titles.schema.names}")
    key = _key_type(left.schema.field("movie_id").type, titles.schema.field("movie_id").type)
    right = (
        pl.from_arrow(titles.select(["movie_id", "title"]))  # type: ignore[union-attr]
        .select(
            pl.col("movie_id").cast(key).alias("__key"),
            pl.col("title").cast(pl.String),
        )
        .drop_nulls("__key")
        .unique(subset="__key", keep="first", maintain_order=True)
    )
    joined = (
        pl.from_arrow(left)  # type: ignore[union-attr]
        .with_columns(pl.col("movie_id").cast(key).alias("__key"))
        .join(right, on="__key", how="left", maintain_order="left")
        .select(list(LONG_COLUMNS))
    )
    out = joined.to_arrow().cast(schema)
    return out, out.column("title").null_count


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet treat a CSV cell as a formula (OWASP)."""


def escape_formulas(table: pa.Table, columns: tuple[str, ...] = ("title",)) -> pa.Table:
    """Prefix a ``'`` to text cells that a spreadsheet would run as a formula.

    OWASP's advice against CSV injection: a title such as ``=HYPERLINK("http://evil", "x")``
    opened in Excel or LibreOffice runs. Only free-text columns are changed (ids are keys that
    downstream joins must match exactly); the Parquet and JSONL outputs are never changed.
    """
    for name in columns:
        if name not in table.schema.names:
            continue
        idx = table.schema.get_field_index(name)
        text = pl.Series(values=table.column(name), dtype=pl.String)
        risky = text.str.slice(0, 1).is_in(FORMULA_TRIGGERS)
        if not risky.any():
            continue
        escaped = pl.select(pl.when(risky).then(pl.lit("'") + text).otherwise(text)).to_series()
        table = table.set_column(
            idx, table.schema.field(name), escaped.to_arrow().cast(pa.string())
        )
    return table
