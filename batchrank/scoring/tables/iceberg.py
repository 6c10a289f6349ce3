"""Apache Iceberg tables through ``pyiceberg``, with any catalog it supports.

Stage: a transaction on the table (or one that creates it: ``create_table_transaction``), the
rows written as Parquet data files under ``<location>/data/<column>=<date>/`` by pyiceberg's own
writer (field ids, column statistics), in files of :data:`FILE_ROWS` rows so memory stays
bounded, then one snapshot (``overwrite`` replacing the partition's files, or ``fast_append``)
with :func:`~batchrank.scoring.tables.target.commit_properties` in its summary; its manifests
are written, not yet referenced. Commit: the catalog swaps the table's metadata pointer, the one
atomic step, refused when another writer moved the table meanwhile.

The default catalog needs no server: pyiceberg's SQL catalog on the SQLite file
``batchrank-catalog.db`` beside a local table; for a table on an object store, in the local
folder :func:`catalog_folder` names (a bucket holds no SQLite file). The warehouse is the folder
above the table. A column the table lacks is added in the same transaction (``union_by_name``).
On an object store the data and metadata files go through pyiceberg's ``PyArrowFileIO`` with
batchrank's endpoint and region (:func:`~batchrank.scoring.tables.store.iceberg_io_properties`).

A location holding Iceberg metadata that the catalog does not know (a catalog file deleted or
another catalog's table) is refused: creating the table anew there would hide its history.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchrank.errors import BatchrankError
from batchrank.fs import ObjectPath, local_folder_for, redact
from batchrank.scoring.row_groups import ROW_GROUP_ROWS
from batchrank.scoring.tables.staged import TableStaged
from batchrank.scoring.tables.store import filesystem, iceberg_io_properties
from batchrank.scoring.tables.target import (
    TableTarget,
    check_compatible,
    commit_properties,
    committing,
    table_error,
)

__all__ = [
    "CATALOG_FILE",
    "FILE_ROWS",
    "TABLE_PROPERTIES",
    "IcebergSink",
    "catalog_folder",
    "load_table",
    "open_catalog",
]

FILE_ROWS = 16 * ROW_GROUP_ROWS
"""Rows per data file (about 1M): pyiceberg writes a file from batches held in memory."""
TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    # A commit that loses a race fails (exit 5) rather than being re-applied on the new base:
    # a re-applied partition replace would keep rows another writer added to the date meanwhile.
    "commit.retry.num-retries": "0",
}
"""Properties of the tables batchrank creates (a table created elsewhere keeps its own)."""
CATALOG_FILE = "batchrank-catalog.db"
"""The default SQLite catalog's file, beside the table."""


def _parent(location: str) -> str:
    return location.rsplit("/", 1)[0]


def _uri(location: str) -> str:
    return location if "://" in location else "file://" + location


def catalog_folder(target: TableTarget) -> Path:
    """Where the default SQLite catalog lives: beside a local table; for an object-store table
    the local folder ``<cache>/catalogs/<scheme>-<bucket>-<hash of the folder>``
    (``BATCHRANK_CACHE_DIR``, else ~/.cache/batchrank)."""
    parent = _parent(target.location)
    if target.is_local:
        return Path(parent)
    return local_folder_for(ObjectPath(parent), "catalogs")


def default_catalog_uri(target: TableTarget) -> str:
    """The default catalog's SQLAlchemy URI: ``sqlite:///<catalog_folder>/batchrank-catalog.db``."""
    return f"sqlite:///{catalog_folder(target) / CATALOG_FILE}"


def open_catalog(target: TableTarget) -> Any:
    """The target's catalog (see the module docstring for the default).

    Raises:
        OutputError: the catalog cannot be opened (naming the table and the catalog).
    """
    from pyiceberg.catalog import load_catalog

    props: dict[str, str] = dict(iceberg_io_properties(target.location))
    env = f"PYICEBERG_CATALOG__{target.catalog.upper()}__URI"
    if target.catalog_uri is not None:
        props["uri"] = target.catalog_uri
    elif env not in os.environ:
        props["uri"] = default_catalog_uri(target)
        if not target.is_local:
            try:
                catalog_folder(target).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise table_error(target, "cannot create the local catalog folder", e) from e
    props["warehouse"] = target.warehouse or _uri(_parent(target.location))
    try:
        return load_catalog(target.catalog, **props)
    except Exception as e:  # pyiceberg and its drivers raise many kinds
        raise table_error(target, f"cannot open the catalog {target.catalog!r}", e) from e


def catalog_uri_of(target: TableTarget) -> str:
    """The catalog's URI as the manifest records it (secrets redacted)."""
    env = f"PYICEBERG_CATALOG__{target.catalog.upper()}__URI"
    uri = target.catalog_uri or os.environ.get(env) or default_catalog_uri(target)
    return redact(uri)


def identifier_of(target: TableTarget) -> tuple[str, str]:
    """``(namespace, name)``: ``--table-identifier`` or ``batchrank.<name of the folder>``."""
    text = target.identifier or f"batchrank.{target.location.rstrip('/').rsplit('/', 1)[-1]}"
    namespace, dot, name = text.rpartition(".")
    if not dot or not namespace or not name:
        raise table_error(target, f"identifier {text!r} must be namespace.name")
    return namespace, name


def load_table(target: TableTarget, catalog: Any) -> Any:
    """The table at the target's identifier, or None; its location must be the target's."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    ident = identifier_of(target)
    try:
        table = catalog.load_table(ident)
    except (NoSuchTableError, NoSuchNamespaceError):
        return None
    except Exception as e:
        raise table_error(target, f"cannot load {'.'.join(ident)} from the catalog", e) from e
    where = table.location().removeprefix("file://").rstrip("/")
    if where != target.location.removeprefix("file://").rstrip("/"):
        raise table_error(
            target, f"the catalog's table {'.'.join(ident)} lives at {table.location()}, not "
            "here; give its location as --out or another --table-identifier",
        )  # fmt: skip
    return table


def check_no_metadata(target: TableTarget) -> None:
    """Refuse a location that holds Iceberg metadata the catalog does not know.

    Raises:
        OutputError: naming the newest metadata file, and how to register it.
    """
    import pyarrow.fs as pafs

    try:
        fs, root = filesystem(target.location)
        selector = pafs.FileSelector(f"{root}/metadata", allow_not_found=True)
        found = sorted(
            i.base_name
            for i in fs.get_file_info(selector)
            if i.base_name.endswith(".metadata.json")
        )
    except OSError as e:
        raise table_error(target, "cannot list its metadata folder", e) from e
    if found:
        raise table_error(
            target, f"holds an Iceberg table (metadata/{found[-1]}) that the catalog "
            f"{target.catalog!r} ({catalog_uri_of(target)}) does not list: give its catalog "
            "(--table-catalog-uri), or register that metadata file in this one "
            "(pyiceberg Catalog.register_table)",
        )  # fmt: skip


def _iceberg_schema(target: TableTarget) -> Any:
    from pyiceberg.schema import Schema
    from pyiceberg.types import (
        DateType,
        FloatType,
        IntegerType,
        LongType,
        NestedField,
        StringType,
    )

    types = {
        pa.int64(): LongType(),
        pa.int32(): IntegerType(),
        pa.string(): StringType(),
        pa.float32(): FloatType(),
        pa.date32(): DateType(),
    }
    fields = [
        NestedField(i, f.name, types[f.type], required=False)
        for i, f in enumerate(target.schema, start=1)
    ]
    return Schema(*fields)


def _partitions(table: Any) -> list[str]:
    from pyiceberg.transforms import IdentityTransform

    schema = table.schema()
    return [
        schema.find_column_name(f.source_id) if isinstance(f.transform, IdentityTransform) else ""
        for f in table.spec().fields
    ]


class IcebergSink:
    """Data files of one run and the Iceberg transaction that publishes them."""

    def __init__(self, target: TableTarget) -> None:
        from pyiceberg.partitioning import PartitionField, PartitionSpec
        from pyiceberg.transforms import IdentityTransform

        self.target = target
        catalog = open_catalog(target)
        self.table = load_table(target, catalog)
        try:
            if self.table is not None:
                missing = check_compatible(
                    target, self.table.schema().as_arrow(), _partitions(self.table)
                )
                self.txn = self.table.transaction()
                if missing:
                    with self.txn.update_schema() as update:
                        update.union_by_name(pa.schema(missing))
                self.missing = [f.name for f in missing]
                self.io = self.table.io
            else:
                check_no_metadata(target)
                schema = _iceberg_schema(target)
                source = schema.find_field(target.partition_column).field_id
                spec = PartitionSpec(
                    PartitionField(source, 1000, IdentityTransform(), target.partition_column)
                )
                namespace, _ = identifier_of(target)
                catalog.create_namespace_if_not_exists(namespace)
                self.txn = catalog.create_table_transaction(
                    identifier_of(target),
                    schema,
                    location=_uri(target.location),
                    partition_spec=spec,
                    properties=TABLE_PROPERTIES,
                )
                self.missing = []
                self.io = self.txn._table.io
        except BatchrankError:
            raise
        except Exception as e:
            raise table_error(target, "cannot start a transaction", e) from e
        self._uuid = uuid.uuid4()
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0
        self._files: list[Any] = []

    def _key(self) -> Any:
        from pyiceberg.partitioning import PartitionFieldValue, PartitionKey

        md = self.txn.table_metadata
        field = next(f for f in md.spec().fields if f.name == self.target.partition_column)
        return PartitionKey(
            field_values=[PartitionFieldValue(field=field, value=self.target.date)],
            partition_spec=md.spec(),
            schema=md.schema(),
        )

    def write(self, rows: pa.Table) -> None:
        self._batches.extend(rows.to_batches())
        self._rows += rows.num_rows
        if self._rows >= FILE_ROWS:
            self._flush()

    def _flush(self) -> None:
        from pyiceberg.io.pyarrow import pyarrow_to_schema, write_file
        from pyiceberg.table import WriteTask

        if not self._batches:
            return
        md = self.txn.table_metadata
        schema = pyarrow_to_schema(
            self.target.schema,
            name_mapping=md.schema().name_mapping,
            format_version=md.format_version,
        )
        task = WriteTask(
            write_uuid=self._uuid,
            task_id=len(self._files),
            schema=schema,
            record_batches=self._batches,
            partition_key=self._key(),
        )
        try:
            self._files.extend(write_file(self.io, md, iter([task])))
        except Exception as e:
            raise table_error(self.target, "cannot write a data file", e) from e
        self._batches, self._rows = [], 0

    def discard(self) -> None:
        self._batches = []
        for f in self._files:
            with contextlib.suppress(Exception):
                self.io.delete(f.file_path)
        self._files = []

    def stage(self, written: dict[str, Any]) -> TableStaged:
        from pyiceberg.exceptions import CommitFailedException

        self._flush()
        target = self.target
        props = commit_properties(target, written)
        old: list[Any] = []
        if self.table is not None and target.mode == "replace-partition":
            date = f"{target.partition_column} = '{target.date.isoformat()}'"
            old = [t.file for t in self.table.scan(row_filter=date).plan_files()]
        update = self.txn.update_snapshot(snapshot_properties=props)
        try:
            with update.overwrite() if old else update.fast_append() as producer:
                snapshot_id = producer._snapshot_id
                for f in old:
                    producer.delete_data_file(f)
                for f in self._files:
                    producer.append_data_file(f)
        except Exception as e:
            raise table_error(target, "cannot stage the snapshot", e) from e
        txn = self.txn

        def commit() -> None:
            with committing(target, CommitFailedException):
                txn.commit_transaction()

        record = {
            "format": "iceberg",
            "location": target.location,
            "identifier": ".".join(identifier_of(target)),
            "catalog": target.catalog,
            "catalog_uri": catalog_uri_of(target),
            "snapshot_id": snapshot_id,
            "partition": {target.partition_column: target.date.isoformat()},
            "mode": target.mode,
            "files": [f.file_path for f in self._files],
            "files_replaced": len(old),
            "bytes": sum(f.file_size_in_bytes for f in self._files),
            "columns_added": self.missing,
            "commit": props,
        }
        return TableStaged(
            target.path,
            commit=commit,
            files=[f.file_path for f in self._files],
            remove=self.io.delete,
            record=record,
        )
