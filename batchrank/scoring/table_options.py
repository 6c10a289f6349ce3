"""The checks of a spec's lake-table options (``--date``, ``--table-*``), apart from the spec so
that it stays one declaration of the options; no table library is imported here."""

from __future__ import annotations

import datetime as dt
import re
from typing import Protocol

from batchrank.formats import TABLE_FORMATS
from batchrank.options import OptionError
from batchrank.scoring.schema import LONG_COLUMNS

__all__ = ["TableFields", "check_table_options"]


class TableFields(Protocol):
    """The fields of a :class:`~batchrank.scoring.spec.ScoreSpec` checked here."""

    @property
    def format(self) -> str | None: ...
    @property
    def layout(self) -> str: ...
    @property
    def date(self) -> dt.date | None: ...
    @property
    def table_partition_column(self) -> str: ...


def check_table_options(spec: TableFields) -> None:
    """Refuse table options where they do not apply, and a bad partition column.

    Raises:
        OptionError: naming the option.
    """
    if spec.format not in TABLE_FORMATS:
        if spec.date is not None:
            raise OptionError(
                "date", f"‹date› applies to table outputs (format delta or iceberg); the "
                f"output format is {spec.format}",
            )  # fmt: skip
        return
    if spec.layout == "nested":
        raise OptionError(
            "layout", f"a {spec.format} table holds the long layout; ‹layout› is nested"
        )
    col = spec.table_partition_column
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", col) or col in LONG_COLUMNS:
        raise OptionError(
            "table_partition_column", "‹table_partition_column› must be a column name of "
            f"letters, digits and '_', not one of {', '.join(LONG_COLUMNS)}; received {col!r}",
        )  # fmt: skip
    if spec.format == "delta":
        for name in ("table_catalog_uri", "table_warehouse", "table_identifier"):
            if getattr(spec, name) is not None:
                raise OptionError(name, f"‹{name}› applies to iceberg tables; format is delta")
