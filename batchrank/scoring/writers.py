"""Atomic, deterministic writers for ranked top-k rows (titles are joined in titles.py).

Output bytes depend only on the rows written, never on how they were split across
:meth:`OutputWriter.write` calls: Parquet is written in fixed row groups, CSV and JSONL line by
line with polars' shortest round-trip float formatting.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.errors import ConfigError, OutputError
from batchrank.formats import (
    TABLE_FORMATS,
    Compression,
    FileFormat,
    Layout,
    check_format_layout,
)
from batchrank.fs import local_or_remote
from batchrank.scoring import row_groups  # ROW_GROUP_* read when used: tests shrink them
from batchrank.scoring.row_groups import (
    ITEM_COLUMNS,
    RowCount,
    full_row_groups,
    nested_users,
    run_starts,
)
from batchrank.scoring.schema import LONG_COLUMNS, long_schema
from batchrank.scoring.titles import escape_formulas
from batchrank.storage import ANY, Staged, Storage, sha256_file
from batchrank.storage.local import os_reason

__all__ = ["LONG_COLUMNS", "Format", "Layout", "OutputWriter"]

Format = FileFormat
_CSV_HEADER = (",".join(LONG_COLUMNS) + "\n").encode()


def _norm_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    return t


class OutputWriter:
    """Write ranked rows to ``out`` atomically: nothing appears there before ``close(True)``.

    Rows go to a temporary file beside ``out`` (``.{name}.batchrank-tmp-<hex>``) renamed onto
    ``out`` on commit. Layouts: ``long`` (one row per recommendation, :data:`LONG_COLUMNS`)
    and ``nested`` (one row per user: ``user_id``, ``items`` list of structs; Parquet and
    JSONL only).

    Use ``close(commit=True)`` to publish; ``close(commit=False)`` (or leaving a ``with`` block
    without committing) removes the temporary file.
    """

    def __init__(
        self,
        out: Path,
        *,
        format: Format,
        layout: Layout,
        metadata: Mapping[str, str] | None = None,
        user_type: pa.DataType | None = None,
        item_type: pa.DataType | None = None,
        compression: Compression = None,
        escape_formulas: bool = True,
        storage: Storage = ANY,
    ) -> None:
        """Open the temporary output file.

        Args:
            out: The final file path.
            format: ``parquet``, ``csv`` or ``jsonl``.
            layout: ``long`` or ``nested``.
            metadata: Key-value metadata stored in a Parquet file's footer (sorted by key).
            user_type: Arrow type of ``user_id``; default: the first written table's
                (int64 when nothing is written).
            item_type: Arrow type of ``movie_id``, likewise.
            compression: ``gzip`` or ``zstd`` for csv and jsonl (from a ``.gz`` / ``.zst``
                suffix); deterministic streams (no timestamps in the gzip header).
            escape_formulas: CSV only: neutralise titles a spreadsheet would run as a formula
                (see :func:`escape_formulas`).
            storage: where the file is published.

        Raises:
            ConfigError: Unknown format or layout, or ``csv`` with ``nested``.
            OutputError: The folder cannot be created or written, or ``out`` is a folder.
        """
        check_format_layout(format, layout)
        if format in TABLE_FORMATS:
            raise ConfigError(f"{out}: a {format} table is written by scoring/tables, not a file")
        if compression is not None and format == "parquet":
            raise ConfigError(
                "parquet compresses inside the file; a compression suffix such as "
                ".gz applies to csv and jsonl only"
            )
        self.out = local_or_remote(Path(out))
        self.format: Format = format
        self.layout: Layout = layout
        self.compression: Compression = compression
        self.escape_formulas = escape_formulas and format == "csv"
        self.metadata = {str(k): str(v) for k, v in sorted((metadata or {}).items())}
        self._user_type = _norm_type(user_type) if user_type is not None else None
        self._item_type = _norm_type(item_type) if item_type is not None else None
        self._schema: pa.Schema | None = None
        self._pq: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffer_rows = 0
        self._buffer_users = 0
        self._count = RowCount()
        self._closed = False
        self._result: dict[str, Any] | None = None
        self._staged: Staged = storage.stage(self.out, "output")
        self._tmp = self._staged.path
        try:
            raw: IO[bytes] = open(self._tmp, "wb")  # noqa: SIM115 (closed in close())
        except OSError as e:
            self._staged.discard()
            raise OutputError(f"{self.out}: cannot create output file ({os_reason(e)})") from e
        self._raw = raw
        self._file: Any = (
            pa.CompressedOutputStream(pa.PythonFile(raw, mode="w"), compression)
            if compression is not None
            else raw
        )
        if format == "csv":
            self._guarded(self._file.write, _CSV_HEADER)

    # -- schema ----------------------------------------------------------------------------

    def _long_schema(self, table: pa.Table | None) -> pa.Schema:
        if self._schema is None:
            ut = self._user_type or (
                _norm_type(table.schema.field("user_id").type) if table is not None else pa.int64()
            )
            it = self._item_type or (
                _norm_type(table.schema.field("movie_id").type) if table is not None else pa.int64()
            )
            self._schema = long_schema(ut, it)
        return self._schema

    def _item_struct(self) -> pa.StructType:
        schema = self._long_schema(None)
        return pa.struct([schema.field(c) for c in ITEM_COLUMNS])

    def _parquet_schema(self) -> pa.Schema:
        schema = self._long_schema(None)
        if self.layout == "nested":
            schema = pa.schema(
                [schema.field("user_id"), pa.field("items", pa.list_(self._item_struct()))]
            )
        return schema.with_metadata(self.metadata) if self.metadata else schema

    # -- writing ---------------------------------------------------------------------------

    def _guarded(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an I/O step; on any error remove the temporary file, map OS errors."""
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            self._abort()
            raise OutputError(f"{self.out}: cannot write output ({os_reason(e)})") from e
        except BaseException:
            self._abort()
            raise

    def write(self, table: pa.Table) -> None:
        """Append ranked rows (complete users, sorted, as from ``join_titles``).

        Raises:
            OutputError: The file cannot be written (the temporary file is removed).
            ValueError: A column is missing.
        """
        if self._closed:
            raise OutputError(f"{self.out}: writer already closed")
        missing = [c for c in LONG_COLUMNS if c not in table.schema.names]
        if missing:
            self._abort()
            raise ValueError(f"rows for {self.out} lack columns {missing}")
        if table.num_rows == 0:
            return
        self._guarded(self._write, table)

    def _write(self, table: pa.Table) -> None:
        table = table.select(list(LONG_COLUMNS)).cast(self._long_schema(table))
        starts = self._count.add(table)
        if self.format == "parquet" and self.layout == "long":
            self._buffer.append(table)
            self._buffer_rows += table.num_rows
            if self._buffer_rows >= row_groups.ROW_GROUP_ROWS:
                groups, rest = full_row_groups(self._buffer)
                for group in groups:
                    self._write_row_group(group)
                self._set_buffer(rest)
        elif self.layout == "nested":
            self._buffer.append(table)
            self._buffer_rows += table.num_rows
            self._buffer_users += len(starts)
            # A lower bound of the buffered users (runs may continue across tables).
            if self._buffer_users - (len(self._buffer) - 1) > self._group_users():
                self._emit_users(final=False)
        elif self.format == "csv":
            if self.escape_formulas:
                table = escape_formulas(table)
            pl.from_arrow(table).write_csv(self._file, include_header=False)  # type: ignore[union-attr]
        else:
            pl.from_arrow(table).write_ndjson(self._file)  # type: ignore[union-attr]

    def _group_users(self) -> int:
        return row_groups.ROW_GROUP_USERS if self.format == "parquet" else 1

    def _set_buffer(self, rest: pa.Table) -> None:
        self._buffer = [rest] if rest.num_rows else []
        self._buffer_rows = rest.num_rows
        self._buffer_users = len(run_starts(rest.column("user_id"))) if rest.num_rows else 0

    def _emit_users(self, final: bool) -> None:
        """Write buffered users in groups of ``_group_users()``; keep an incomplete tail."""
        if not self._buffer:
            return
        buf = pa.concat_tables(self._buffer)
        starts = run_starts(buf.column("user_id"))
        group = self._group_users()
        n_users = len(starts)
        # Only users followed by another user are known complete, unless final.
        complete = n_users if final else n_users - 1
        emit = complete if self.format == "jsonl" or final else (complete // group) * group
        if emit <= 0:
            return
        if self.format == "jsonl":
            end = buf.num_rows if emit == n_users else int(starts[emit])
            nested = nested_users(buf.slice(0, end), self._item_struct())
            pl.from_arrow(nested).write_ndjson(self._file)  # type: ignore[union-attr]
        else:
            for g in range(0, emit, group):
                lo = int(starts[g])
                hi = buf.num_rows if g + group >= n_users else int(starts[g + group])
                self._write_row_group(nested_users(buf.slice(lo, hi - lo), self._item_struct()))
            end = buf.num_rows if emit == n_users else int(starts[emit])
        self._set_buffer(buf.slice(end))

    def _write_row_group(self, table: pa.Table) -> None:
        if self._pq is None:
            self._pq = pq.ParquetWriter(self._file, self._parquet_schema(), compression="zstd")
        table = table.combine_chunks()
        self._pq.write_table(table, row_group_size=max(1, table.num_rows))

    # -- closing ---------------------------------------------------------------------------

    def close(self, commit: bool) -> dict[str, Any]:
        """Finish the file and publish it (``commit=True``) or discard it.

        Returns:
            ``path``, ``rows`` (recommendations), ``users``, ``sha256`` and ``bytes`` of the
            committed file (``sha256`` None and ``bytes`` 0 when discarded).

        Raises:
            OutputError: The file cannot be finished or renamed (the temporary file is
                removed), or ``commit=True`` after the writer was discarded.
        """
        if self._closed:
            if commit and self._result is None:
                raise OutputError(f"{self.out}: writer was discarded; nothing to commit")
            return self._result or self._summary(None, 0)
        if not commit:
            self._abort()
            return self._summary(None, 0)
        staged, summary = self.finish()
        staged.commit().finalize()
        return summary

    def finish(self) -> tuple[Staged, dict[str, Any]]:
        """Finish the temporary file without publishing it: the caller commits the returned
        :class:`~batchrank.storage.base.Staged` (alone, or in a
        :class:`~batchrank.storage.unit.CommitUnit` with other files).

        Returns:
            The staged file and the summary of :meth:`close`.
        """
        if self._closed:
            raise OutputError(f"{self.out}: writer already closed")
        self._guarded(self._finish)
        digest, size = self._guarded(sha256_file, self._tmp)
        self._closed = True
        self._result = self._summary(digest, size)
        return self._staged, self._result

    def _finish(self) -> None:
        if self.format == "parquet":
            if self.layout == "long":
                if self._buffer:
                    self._write_row_group(pa.concat_tables(self._buffer))
                self._buffer = []
            else:
                self._emit_users(final=True)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self._file, self._parquet_schema(), compression="zstd")
            self._pq.close()
            self._pq = None
        elif self.layout == "nested":
            self._emit_users(final=True)
        self._file.flush()
        if self._file is not self._raw:
            self._file.close()  # ends the compressed stream (and closes the file under it)
        if not self._raw.closed:
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()

    def _summary(self, digest: str | None, size: int) -> dict[str, Any]:
        return {
            "path": str(self.out),
            "rows": self._count.rows,
            "users": self._count.users,
            "sha256": digest,
            "bytes": size,
        }

    def _abort(self) -> None:
        """Drop the temporary file; the writer cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._pq is not None:
            with contextlib.suppress(Exception):
                self._pq.close()
            self._pq = None
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(OSError):
            self._raw.close()
        self._staged.discard()
        self._buffer = []

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self._abort()
