"""Delta Lake tables through delta-rs (the ``deltalake`` package).

Stage: the rows are written as zstd Parquet files into ``<table>/<column>=<date>/`` (Delta
keeps partition values in the log, not in the files), with their add actions (size, partition
value, row count, null counts, id bounds for data skipping). Commit: one Delta log entry, by
``DeltaTable.create_write_transaction`` (``mode="overwrite"`` with a partition filter replaces the
run date's partition, ``"append"`` adds) or ``create_table_with_add_actions`` for a new table;
its commit info carries :func:`~batchrank.scoring.tables.target.commit_properties`. Retries are
off, so the version the manifest names is the version committed, or the run fails.

An object-store table (``s3://...``) goes through the same code: batchrank's pyarrow file system
writes the data files, and delta-rs gets the endpoint and region as ``storage_options``
(:func:`~batchrank.scoring.tables.store.delta_storage_options`; credentials from the SDK chain).
Its log entry is a conditional put, so a concurrent writer of the same version fails the run.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchrank.scoring.row_groups import ROW_GROUP_ROWS
from batchrank.scoring.schema import MOVIE_ID, RANK, USER_ID
from batchrank.scoring.tables.staged import TableStaged
from batchrank.scoring.tables.store import delta_storage_options, filesystem
from batchrank.scoring.tables.target import (
    TableTarget,
    check_compatible,
    commit_properties,
    committing,
    table_error,
)

__all__ = ["FILE_ROWS", "DeltaSink", "open_delta"]

FILE_ROWS = 16 * ROW_GROUP_ROWS
"""Rows per data file (about 1M: tens of MiB of zstd Parquet)."""
_BOUNDED = (USER_ID, RANK, MOVIE_ID)
"""Columns whose min and max go into the add action's statistics."""


def _fs(target: TableTarget) -> tuple[pafs.FileSystem, str]:
    try:
        return filesystem(target.location)
    except (pa.ArrowException, ValueError, OSError) as e:
        raise table_error(target, "cannot open its location", e) from e


def open_delta(target: TableTarget) -> Any:
    """The existing Delta table at the target, or None when there is none yet.

    Raises:
        OutputError: the location is a file, or a folder holding other things than a Delta
            table (or the leftovers of a killed first run), or an unreadable table.
    """
    from deltalake import DeltaTable

    fs, root = _fs(target)
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            return None
        entries = fs.get_file_info(pafs.FileSelector(root))
    except OSError as e:
        raise table_error(target, "cannot list its location", e) from e
    if info.type != pafs.FileType.Directory:
        raise table_error(target, "is a file, not a Delta table folder")
    if any(e.base_name == "_delta_log" for e in entries):
        # not DeltaTable.is_deltatable: it holds the GIL while it waits on the store
        try:
            return DeltaTable(
                target.location, storage_options=delta_storage_options(target.location)
            )
        except Exception as e:  # delta-rs raises several kinds (DeltaError, OSError)
            raise table_error(target, "cannot be read as a Delta table", e) from e
    prefix = f"{target.partition_column}="
    for entry in entries:
        if not (entry.type == pafs.FileType.Directory and entry.base_name.startswith(prefix)):
            raise table_error(
                target, f"is a folder that is not a Delta table (no _delta_log; it holds "
                f"{entry.base_name!r}); give a new or empty folder",
            )  # fmt: skip
    return None  # only data files of killed runs, never committed: a new table


def _partitions(table: Any) -> list[str]:
    return list(table.metadata().partition_columns)


def _arrow_schema(table: Any) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


class DeltaSink:
    """Data files of one run and the Delta commit that publishes them."""

    def __init__(self, target: TableTarget) -> None:
        self.target = target
        self.fs, self.root = _fs(target)
        table = open_delta(target)
        if table is not None:
            check_compatible(target, _arrow_schema(table), _partitions(table))
        col, date = target.partition_column, target.date.isoformat()
        self._folder = f"{col}={date}"
        self._file_schema = pa.schema([f for f in target.schema if f.name != col])
        self._adds: list[Any] = []
        self._paths: list[str] = []
        self._writer: pq.ParquetWriter | None = None
        self._stream: Any = None
        self._path = ""
        self._rows = 0
        self._nulls: dict[str, int] = {}
        self._bounds: dict[str, list[Any]] = {}
        self._token = f"{target.run_id}-{uuid.uuid4().hex[:8]}"

    # -- data files ----------------------------------------------------------------------------

    def write(self, rows: pa.Table) -> None:
        rows = rows.drop_columns([self.target.partition_column])
        if self._writer is None:
            self._open_file()
        assert self._writer is not None
        try:
            self._writer.write_table(rows, row_group_size=max(1, rows.num_rows))
        except OSError as e:
            raise table_error(self.target, f"cannot write {self._path}", e) from e
        self._rows += rows.num_rows
        for name in rows.column_names:
            self._nulls[name] = self._nulls.get(name, 0) + rows.column(name).null_count
        for name in _BOUNDED:
            mm = pc.min_max(rows.column(name)).as_py()
            if mm["min"] is None:
                continue
            old = self._bounds.get(name)
            self._bounds[name] = (
                [mm["min"], mm["max"]]
                if old is None
                else [min(old[0], mm["min"]), max(old[1], mm["max"])]
            )
        if self._rows >= FILE_ROWS:
            self._close_file()

    def _open_file(self) -> None:
        name = f"part-{len(self._adds):05d}-{self._token}.zstd.parquet"
        self._path = f"{self._folder}/{name}"
        self._paths.append(self._path)
        try:
            if self.target.is_local:  # an object store has no folders to make
                self.fs.create_dir(f"{self.root}/{self._folder}", recursive=True)
            self._stream = self.fs.open_output_stream(f"{self.root}/{self._path}")
        except OSError as e:
            raise table_error(self.target, f"cannot create {self._path}", e) from e
        self._writer = pq.ParquetWriter(self._stream, self._file_schema, compression="zstd")

    def _close_file(self) -> None:
        from deltalake.transaction import AddAction

        if self._writer is None:
            return
        try:
            self._writer.close()
            self._stream.close()
            size = self.fs.get_file_info(f"{self.root}/{self._path}").size
        except OSError as e:
            raise table_error(self.target, f"cannot finish {self._path}", e) from e
        self._writer = None
        stats = {
            "numRecords": self._rows,
            "minValues": {k: v[0] for k, v in self._bounds.items()},
            "maxValues": {k: v[1] for k, v in self._bounds.items()},
            "nullCount": self._nulls,
        }
        self._adds.append(
            AddAction(
                path=self._path,
                size=int(size or 0),
                partition_values={self.target.partition_column: self.target.date.isoformat()},
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=json.dumps(stats, sort_keys=True),
            )
        )
        self._rows, self._nulls, self._bounds = 0, {}, {}

    def discard(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
                self._stream.close()
            self._writer = None
        for path in self._paths:
            with contextlib.suppress(OSError):
                self.fs.delete_file(f"{self.root}/{path}")
        self._adds, self._paths = [], []

    # -- the transaction -----------------------------------------------------------------------

    def stage(self, written: dict[str, Any]) -> TableStaged:
        self._close_file()
        target = self.target
        table = open_delta(target)  # the newest version: the commit window stays small
        missing: list[pa.Field] = []
        if table is not None:
            missing = check_compatible(target, _arrow_schema(table), _partitions(table))
        read_version = table.version() if table is not None else None
        version = 0 if read_version is None else read_version + 1 + (1 if missing else 0)
        props = commit_properties(target, written)
        adds = list(self._adds)
        replace = target.mode == "replace-partition"

        def commit() -> None:
            from deltalake import CommitProperties, Schema
            from deltalake.exceptions import CommitFailedError
            from deltalake.transaction import create_table_with_add_actions

            def properties() -> Any:
                return CommitProperties(custom_metadata=dict(props), max_commit_retries=0)

            col = target.partition_column
            with committing(target, CommitFailedError):
                if table is None:
                    create_table_with_add_actions(
                        target.location,
                        Schema.from_arrow(target.schema),
                        adds,
                        mode="error",
                        partition_by=[col],
                        commit_properties=properties(),
                        storage_options=delta_storage_options(target.location) or None,
                    )
                    return
                if missing:
                    from deltalake import Field

                    table.alter.add_columns(
                        [Field.from_arrow(f) for f in missing], commit_properties=properties()
                    )
                table.create_write_transaction(
                    adds,
                    mode="overwrite" if replace else "append",
                    schema=_arrow_schema(table),
                    partition_by=[col],
                    partition_filters=[(col, "=", target.date.isoformat())] if replace else None,
                    commit_properties=properties(),
                )

        record = {
            "format": "delta",
            "location": target.location,
            "version": version,
            "read_version": read_version,
            "partition": {target.partition_column: target.date.isoformat()},
            "mode": target.mode,
            "files": [a.path for a in adds],
            "bytes": sum(a.size for a in adds),
            "columns_added": [f.name for f in missing],
            "commit": props,
        }
        return TableStaged(
            target.path,
            commit=commit,
            files=[a.path for a in adds],
            remove=lambda p: self.fs.delete_file(f"{self.root}/{p}"),
            record=record,
        )
