"""The table writer: ranked rows in, fixed-size row groups out to a table sink, counted.

It takes what :class:`~batchrank.scoring.writers.OutputWriter` takes (complete users, sorted,
titles joined), adds the partition column and hands the sink slices of exactly
:data:`~batchrank.scoring.row_groups.ROW_GROUP_ROWS` rows, so the data files do not depend on how
the rows arrived. Nothing is held beyond one row group and the sink's open file.
"""

from __future__ import annotations

from typing import Any, Protocol

import pyarrow as pa

from batchrank.scoring.row_groups import ROW_GROUP_ROWS, RowCount, full_row_groups
from batchrank.scoring.schema import LONG_COLUMNS
from batchrank.scoring.tables.staged import TableStaged
from batchrank.scoring.tables.target import TableTarget

__all__ = ["Sink", "TableWriter"]


class Sink(Protocol):
    """One table format's data files and transaction."""

    def write(self, rows: pa.Table) -> None:
        """Write rows (the target's schema) into the open data file."""

    def stage(self, written: dict[str, Any]) -> TableStaged:
        """Close the data files and prepare the one transaction that commits them."""

    def discard(self) -> None:
        """Delete the data files written so far."""


class TableWriter:
    """Stream ranked rows into one table transaction (see the module docstring)."""

    def __init__(self, target: TableTarget, sink: Sink) -> None:
        self.target = target
        self.sink = sink
        self._schema = target.schema
        self._long = pa.schema([self._schema.field(c) for c in LONG_COLUMNS])
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._count = RowCount()
        self._closed = False

    def write(self, table: pa.Table) -> None:
        """Append ranked rows (``user_id, rank, movie_id, title, stars, score``)."""
        if table.num_rows == 0:
            return
        try:
            table = table.select(list(LONG_COLUMNS)).cast(self._long)
            self._count.add(table)
            self._buffer.append(table)
            self._buffered += table.num_rows
            if self._buffered >= ROW_GROUP_ROWS:
                groups, rest = full_row_groups(self._buffer)
                for group in groups:
                    self._emit(group)
                self._buffer = [rest] if rest.num_rows else []
                self._buffered = rest.num_rows
        except BaseException:
            self.close()
            raise

    def _emit(self, rows: pa.Table) -> None:
        date = pa.array([self.target.date] * rows.num_rows, pa.date32())
        rows = rows.combine_chunks().append_column(self._schema.field(-1), date)
        self.sink.write(rows)

    def finish(self) -> tuple[TableStaged, dict[str, Any]]:
        """Write the last row group and stage the transaction.

        Returns:
            The staged transaction and the summary a manifest records: ``path``, ``rows``,
            ``users``, ``bytes`` (the new data files), ``sha256`` (None: a table is many files;
            its commit is the certificate) and ``table`` (format, partition, version or
            snapshot id, files).
        """
        try:
            if self._buffer:
                self._emit(pa.concat_tables(self._buffer))
                self._buffer = []
            written: dict[str, Any] = {
                "path": self.target.location,
                "rows": self._count.rows,
                "users": self._count.users,
                "sha256": None,
            }
            staged = self.sink.stage(written)
        except BaseException:
            self.close()
            raise
        self._closed = True
        written["bytes"] = staged.record.get("bytes", 0)
        written["table"] = staged.record
        return staged, written

    def close(self, commit: bool = False) -> None:
        """Discard what was written (a table writer publishes only through :meth:`finish`)."""
        assert not commit, "a table is published by committing what finish() staged"
        if not self._closed:
            self._closed = True
            self.sink.discard()
