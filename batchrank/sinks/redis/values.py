"""Keys, values and ``SET`` commands for a batch of users, built column-wise from Arrow.

A user's value is the ``items`` list of the nested layout, encoded by the same polars JSON
encoder the JSON Lines writer uses, so ``json.loads(value)`` equals the ``items`` of the user's
line in a ``--layout nested`` ``.jsonl`` output, float formatting included (shortest round-trip;
NaN as ``null``). ``compact`` values hold the movie ids only: ``[50,181,1]``.

The protocol bytes of every ``SET`` (``*3 $3 SET $<n> <key> $<n> <value>``, CRLF-separated)
are one ``concat_str`` over the columns, whose Arrow data buffer is sent as it is: no Python
code runs per key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from batchrank.scoring.schema import LONG_COLUMNS, long_schema
from batchrank.scoring.writers import nested_users, run_starts
from batchrank.sinks.redis.target import ValueFormat

__all__ = ["Encoded", "key_values", "set_commands"]

_ITEM_COLUMNS = LONG_COLUMNS[1:]
_ITEMS_HEAD = len('{"items":')


def _norm(t: pa.DataType) -> pa.DataType:
    return pa.string() if pa.types.is_large_string(t) or pa.types.is_string_view(t) else t


def key_values(table: pa.Table, key_prefix: str, value: ValueFormat) -> pl.DataFrame:
    """One row per user of ``table`` (ranked rows of complete users, grouped as the writer
    gets them): ``key`` (``key_prefix + user_id``) and ``value`` (the JSON list)."""
    names = table.schema.names
    schema = long_schema(
        _norm(table.schema.field("user_id").type), _norm(table.schema.field("movie_id").type)
    )
    if value == "json":
        table = table.select(list(LONG_COLUMNS)).cast(schema)
        item = pa.struct([schema.field(c) for c in _ITEM_COLUMNS])
        nested = nested_users(table, item)
    else:
        missing = [c for c in ("user_id", "movie_id") if c not in names]
        if missing:
            raise ValueError(f"ranked rows lack columns {missing}")
        table = table.select(["user_id", "movie_id"]).combine_chunks()
        starts = run_starts(table.column("user_id"))
        offsets = pa.array(np.append(starts, table.num_rows), pa.int32())
        movies = table.column("movie_id").combine_chunks().cast(schema.field("movie_id").type)
        users = table.column("user_id").take(pa.array(starts, pa.int64()))
        nested = pa.table({"user_id": users, "items": pa.ListArray.from_arrays(offsets, movies)})
    frame = pl.from_arrow(nested)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(
        key=pl.concat_str(pl.lit(key_prefix), pl.col("user_id").cast(pl.String)),
        value=pl.struct("items").struct.json_encode().str.slice(_ITEMS_HEAD).str.head(-1),
    )


@dataclass(frozen=True)
class Encoded:
    """The ``SET`` commands of a batch of users, as protocol bytes."""

    data: memoryview
    users: int
    key_bytes: int
    value_bytes: int


def set_commands(kv: pl.DataFrame) -> Encoded:
    """``SET key value`` for every row of :func:`key_values`'s frame, concatenated."""
    key, val = pl.col("key"), pl.col("value")
    resp = kv.select(
        pl.concat_str(
            pl.lit("*3\r\n$3\r\nSET\r\n$"),
            key.str.len_bytes().cast(pl.String),
            pl.lit("\r\n"),
            key,
            pl.lit("\r\n$"),
            val.str.len_bytes().cast(pl.String),
            pl.lit("\r\n"),
            val,
            pl.lit("\r\n"),
        )
    ).to_series()
    sizes = kv.select(k=key.str.len_bytes().sum(), v=val.str.len_bytes().sum()).row(0)
    arr = resp.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string()) if not pa.types.is_large_string(arr.type) else arr
    offsets = np.frombuffer(arr.buffers()[1], np.int64)
    lo, hi = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
    data = memoryview(arr.buffers()[2])[lo:hi] if len(arr) else memoryview(b"")
    return Encoded(data, kv.height, int(sizes[0] or 0), int(sizes[1] or 0))
