"""How ranked rows are cut for writing: runs of one user's rows, fixed row groups, nested users.

Output bytes must not depend on how the rows arrived (which chunk, which engine), so every
writer cuts them by the rows alone: Parquet row groups of exactly :data:`ROW_GROUP_ROWS` rows
(:data:`ROW_GROUP_USERS` users in the nested layout), users found by :func:`run_starts` and
counted across tables by :class:`RowCount`. Shared by the file writer
(:mod:`batchrank.scoring.writers`), its parts, the lake tables and the Redis sink.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from batchrank.scoring.schema import LONG_COLUMNS

__all__ = [
    "ITEM_COLUMNS",
    "ROW_GROUP_ROWS",
    "ROW_GROUP_USERS",
    "RowCount",
    "full_row_groups",
    "nested_users",
    "run_starts",
]

ITEM_COLUMNS = LONG_COLUMNS[1:]
ROW_GROUP_ROWS = 65_536
"""Rows per Parquet row group in the long layout."""
ROW_GROUP_USERS = 8_192
"""Users per Parquet row group in the nested layout."""


def run_starts(users: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Row positions where a new user starts (rows grouped by user)."""
    s = pl.Series(values=users)
    return np.flatnonzero(s.ne_missing(s.shift(1)).to_numpy())


class RowCount:
    """Rows and users of ranked rows written in order (a user may continue into the next
    table), shared by the file and the table writers."""

    def __init__(self) -> None:
        self.rows = 0
        self.users = 0
        self._last: Any = None

    def add(self, table: pa.Table) -> np.ndarray:
        """Count a non-empty table; return where its users start."""
        starts = run_starts(table.column("user_id"))
        users = len(starts)
        if self.rows and table.column("user_id")[0].as_py() == self._last:
            users -= 1
        self._last = table.column("user_id")[-1].as_py()
        self.rows += table.num_rows
        self.users += users
        return starts


def full_row_groups(buffer: list[pa.Table]) -> tuple[list[pa.Table], pa.Table]:
    """The buffered rows cut into :data:`ROW_GROUP_ROWS`-row groups, and the rest."""
    buf = pa.concat_tables(buffer)
    full = (buf.num_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
    return [buf.slice(lo, ROW_GROUP_ROWS) for lo in range(0, full, ROW_GROUP_ROWS)], buf.slice(full)


def nested_users(table: pa.Table, item_schema: pa.StructType) -> pa.Table:
    """The nested layout, one row per user: ``user_id``, ``items`` list<struct<rank, movie_id,
    title, stars, score>> (``table`` holds complete users, grouped); the Redis sink's values too."""
    table = table.combine_chunks()
    starts = run_starts(table.column("user_id"))
    offsets = pa.array(np.append(starts, table.num_rows), pa.int32())
    values = pa.StructArray.from_arrays(
        [table.column(c).combine_chunks() for c in ITEM_COLUMNS],
        fields=list(item_schema),
    )
    items = pa.ListArray.from_arrays(offsets, values)
    users = table.column("user_id").take(pa.array(starts, pa.int64()))
    return pa.table({"user_id": users, "items": items})
