"""Lake table outputs: Delta Lake (``deltalake``) and Apache Iceberg (``pyiceberg``).

``--format delta`` / ``iceberg``: ``--out`` is the table's folder; each run writes the long
layout's rows plus the partition column (``run_date``) and publishes them as exactly one table
commit (docs/tables.md). Imported only when a run writes a table: the libraries are the
``lake`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from batchrank.errors import ConfigError
from batchrank.scoring.spec import ScoreSpec
from batchrank.scoring.tables.staged import TableCommitted, TableStaged
from batchrank.scoring.tables.target import TableTarget
from batchrank.scoring.tables.writer import TableWriter

__all__ = ["TableCommitted", "TableStaged", "TableTarget", "TableWriter", "open_table_writer"]

_PACKAGES = {"delta": "deltalake", "iceberg": "pyiceberg"}


def open_table_writer(
    spec: ScoreSpec,
    *,
    run_id: str,
    user_type: pa.DataType,
    item_type: pa.DataType,
    record: Mapping[str, str],
) -> TableWriter:
    """A writer into the spec's table; the existing table is checked before any row is written.

    Raises:
        ConfigError: the format's library is not installed (``pip install 'batchrank[lake]'``).
        OutputError: the location is no table of the format, or an incompatible one, or its
            catalog cannot be opened.
    """
    target = TableTarget.of(
        spec, run_id=run_id, user_type=user_type, item_type=item_type, record=record
    )
    package = _PACKAGES[target.format]
    try:
        __import__(package)
    except ImportError:
        raise ConfigError(
            f"--format {target.format} needs the {package} package: pip install 'batchrank[lake]'"
        ) from None
    if target.format == "delta":
        from batchrank.scoring.tables.delta import DeltaSink

        return TableWriter(target, DeltaSink(target))
    from batchrank.scoring.tables.iceberg import IcebergSink

    return TableWriter(target, IcebergSink(target))
