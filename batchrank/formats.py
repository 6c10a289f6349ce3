"""File formats and compressions, by suffix: the one table every reader, writer and check uses.

Inputs (pairs, users, items) are Parquet or CSV. Outputs are Parquet, CSV or JSON Lines; CSV and
JSON Lines may be compressed (``.gz``, ``.zst``), which the suffix says. A name whose suffix is
not in these tables is refused, never guessed. Lake tables (Delta Lake, Apache Iceberg) are
folders, not files: their format is named (``--format delta``), never read from a suffix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal, get_args

__all__ = [
    "COMPRESSIONS",
    "GLOB_CHARS",
    "INPUT_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "TABLE_FORMATS",
    "Compression",
    "FileFormat",
    "InputFormat",
    "Layout",
    "OutputFormat",
    "OutputKind",
    "TableFormat",
    "check_format_layout",
    "input_format_of",
    "output_kind_of",
    "output_suffixes_for",
]

FileFormat = Literal["parquet", "csv", "jsonl"]
TableFormat = Literal["delta", "iceberg"]
OutputFormat = Literal["parquet", "csv", "jsonl", "delta", "iceberg"]
Layout = Literal["long", "nested"]
InputFormat = Literal["parquet", "csv"]
Compression = Literal["gzip", "zstd"] | None

TABLE_FORMATS: tuple[TableFormat, ...] = get_args(TableFormat)
"""Output formats that are lake tables (a folder committed by a table transaction)."""

GLOB_CHARS = frozenset("*?[")
"""Characters that make a path a glob pattern."""

INPUT_SUFFIXES: dict[str, InputFormat] = {".parquet": "parquet", ".csv": "csv"}
"""Suffixes of input files batchrank reads, and their formats."""

COMPRESSIONS: dict[str, Compression] = {".gz": "gzip", ".zst": "zstd"}
"""Compression suffixes allowed after a text output's suffix."""

OUTPUT_SUFFIXES: dict[str, FileFormat] = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
"""Suffixes of outputs, and their formats (``.csv.gz`` and the like add a compression)."""


@dataclass(frozen=True)
class OutputKind:
    """What an output's name says: its format and compression."""

    format: FileFormat
    compression: Compression = None


def input_format_of(name: str | PurePath) -> InputFormat | None:
    """The input format a file name's suffix names, or None."""
    return INPUT_SUFFIXES.get(PurePath(name).suffix.lower())


def output_kind_of(name: str | PurePath) -> OutputKind | None:
    """The format (and compression) an output name's suffixes name, or None when unknown.

    ``top.csv.gz`` is gzip-compressed CSV; ``top.parquet.gz`` is unknown (Parquet compresses
    inside the file).
    """
    suffixes = [s.lower() for s in PurePath(name).suffixes]
    if not suffixes:
        return None
    last = suffixes[-1]
    if last in OUTPUT_SUFFIXES:
        return OutputKind(OUTPUT_SUFFIXES[last])
    if last in COMPRESSIONS and len(suffixes) >= 2:
        fmt = OUTPUT_SUFFIXES.get(suffixes[-2])
        if fmt in ("csv", "jsonl"):
            return OutputKind(fmt, COMPRESSIONS[last])
    return None


def check_format_layout(fmt: str, layout: str) -> None:
    """Refuse an unknown format or layout, or the nested layout in CSV or a table.

    Raises:
        ConfigError: naming the value and what was expected.
    """
    from batchrank.errors import ConfigError

    if fmt not in get_args(OutputFormat):
        raise ConfigError(
            f"unknown output format {fmt!r}; expected parquet, csv, jsonl, delta or iceberg"
        )
    if layout not in get_args(Layout):
        raise ConfigError(f"unknown output layout {layout!r}; expected long or nested")
    if fmt == "csv" and layout == "nested":
        raise ConfigError("the nested layout needs parquet or jsonl; received csv")
    if fmt in TABLE_FORMATS and layout == "nested":
        raise ConfigError(f"a {fmt} table holds the long layout; received layout nested")


def output_suffixes_for(fmt: FileFormat) -> list[str]:
    """Every output suffix that names ``fmt`` (for messages)."""
    plain = [s for s, f in OUTPUT_SUFFIXES.items() if f == fmt]
    if fmt == "parquet":
        return plain
    return plain + [p + c for p in plain for c in COMPRESSIONS]
