"""What every lake table write shares: the target, the table's schema and its compatibility.

A table holds exactly the long layout's columns and types (:func:`batchrank.scoring.schema.
long_schema`) plus the partition column, a ``date`` (``run_date`` by default).

Schema policy (docs/tables.md): a column batchrank writes must have the same type in an existing
table; a column the table lacks is added (nullable) in the run's transaction, so a later
batchrank with a new column keeps writing to the same table; a table column batchrank does not
write must be nullable (it reads as null in the new rows); the table must be partitioned by the
partition column alone. Anything else is an incompatible table: one line naming it, exit 5.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batchrank.errors import OutputError
from batchrank.formats import TableFormat
from batchrank.fs import redact
from batchrank.scoring.schema import long_schema
from batchrank.store_errors import KNOWN_REASONS, remote_reason

if TYPE_CHECKING:
    from batchrank.scoring.spec import ScoreSpec, TableMode

__all__ = [
    "TableTarget",
    "check_compatible",
    "commit_properties",
    "committing",
    "location_of",
    "table_error",
    "table_schema",
]


@dataclass(frozen=True, kw_only=True)
class TableTarget:
    """One run's table write: where, which partition, how, and what the commit records."""

    format: TableFormat
    location: str
    """The table's folder: an absolute local path (or a URI the table library reads)."""
    date: dt.date
    mode: TableMode
    partition_column: str
    run_id: str
    user_type: pa.DataType
    item_type: pa.DataType
    record: Mapping[str, str] = field(default_factory=dict)
    """What the commit records besides the counts (model fingerprint, top_k, ...)."""
    catalog: str = "batchrank"
    catalog_uri: str | None = None
    warehouse: str | None = None
    identifier: str | None = None

    @classmethod
    def of(
        cls,
        spec: ScoreSpec,
        *,
        run_id: str,
        user_type: pa.DataType,
        item_type: pa.DataType,
        record: Mapping[str, str],
    ) -> TableTarget:
        """The target of a spec whose format is a table."""
        assert spec.format in ("delta", "iceberg")
        return cls(
            format=spec.format,
            location=location_of(str(spec.out)),
            date=spec.date or dt.date.today(),
            mode=spec.table_mode,
            partition_column=spec.table_partition_column,
            run_id=run_id,
            user_type=user_type,
            item_type=item_type,
            record=dict(record),
            catalog=spec.table_catalog,
            catalog_uri=spec.table_catalog_uri,
            warehouse=spec.table_warehouse,
            identifier=spec.table_identifier,
        )

    @property
    def is_local(self) -> bool:
        return "://" not in self.location

    @property
    def path(self) -> Path:
        """The location as a ``Path`` (an ObjectPath for a URI): what the run's lock and the
        manifest beside the table are named after."""
        from batchrank.scoring.tables.store import path_of

        return path_of(self.location)

    @property
    def schema(self) -> pa.Schema:
        """The rows' schema: the long layout plus the partition column."""
        return table_schema(self.user_type, self.item_type, self.partition_column)


def location_of(text: str) -> str:
    """A table's location: an absolute local path, or an object-store URI as given."""
    if "://" in text and not text.startswith("file://"):
        return text.rstrip("/")  # an object store: the table library resolves it
    return os.path.abspath(os.path.expanduser(text.removeprefix("file://")))


def table_schema(user_type: pa.DataType, item_type: pa.DataType, partition: str) -> pa.Schema:
    """The long layout's columns and types, then ``partition`` (a date)."""
    return long_schema(user_type, item_type).append(pa.field(partition, pa.date32()))


def table_error(target: TableTarget, what: str, e: BaseException | None = None) -> OutputError:
    """One line naming the table (exit 5): ``<format> table <location>: <what> (<reason>)``.

    The reason is the library's first line, secrets redacted; for an object-store table, the
    store's own reason when it is recognised (``bucket does not exist``, ``cannot reach the
    storage server``)."""
    reason = ""
    if e is not None and str(e).strip():
        known = remote_reason(e) if not target.is_local else ""
        if known in KNOWN_REASONS and known != "no such object":
            reason = f" ({known})"
        else:
            reason = f" ({redact(str(e).strip().splitlines()[0])[:300]})"
    return OutputError(f"{target.format} table {redact(target.location)}: {what}{reason}")


@contextlib.contextmanager
def committing(target: TableTarget, conflict: type[BaseException]) -> Iterator[None]:
    """Map a table library's commit errors: ``conflict`` (another writer won the race) and any
    other, each to one line naming the table (exit 5)."""
    try:
        yield
    except conflict as e:
        raise table_error(
            target, "another writer committed to the table during this run; nothing of this "
            "run was committed (run it again)", e,
        ) from e  # fmt: skip
    except OutputError:
        raise
    except Exception as e:  # the libraries raise many kinds
        raise table_error(target, "the commit failed", e) from e


def _same(a: pa.DataType, b: pa.DataType) -> bool:
    def norm(t: pa.DataType) -> pa.DataType:
        return pa.string() if pa.types.is_large_string(t) or pa.types.is_string_view(t) else t

    return bool(norm(a).equals(norm(b)))


def check_compatible(
    target: TableTarget, existing: pa.Schema, partitions: list[str]
) -> list[pa.Field]:
    """Check an existing table against what this run writes (the module's policy).

    Returns:
        The fields the table lacks, to add in the run's transaction.

    Raises:
        OutputError: an incompatible table, naming it, the column and both types.
    """
    if partitions != [target.partition_column]:
        raise table_error(
            target, f"is partitioned by {partitions or 'nothing'}; batchrank writes tables "
            f"partitioned by [{target.partition_column!r}] (--table-partition-column)",
        )  # fmt: skip
    ours = target.schema
    missing = []
    for f in ours:
        if f.name not in existing.names:
            missing.append(f)
            continue
        theirs = existing.field(f.name)
        if not _same(theirs.type, f.type):
            raise table_error(
                target, f"column {f.name!r} is {theirs.type}, batchrank writes {f.type}: an "
                "incompatible table; write to a new table",
            )  # fmt: skip
    for f in existing:
        if f.name not in ours.names and not f.nullable:
            raise table_error(
                target, f"column {f.name!r} is required (not null) and batchrank does not write "
                "it: an incompatible table",
            )  # fmt: skip
    return missing


def commit_properties(target: TableTarget, written: Mapping[str, Any]) -> dict[str, str]:
    """What each commit records (Delta commit info, Iceberg snapshot summary): strings."""
    props = {
        "batchrank.run_id": target.run_id,
        "batchrank.run_date": target.date.isoformat(),
        "batchrank.mode": target.mode,
        "batchrank.rows": str(written["rows"]),
        "batchrank.users": str(written["users"]),
    }
    props.update({k: str(v) for k, v in target.record.items()})
    return dict(sorted(props.items()))
