"""The evaluation's inputs read in chunks: held-out ratings and top-k exports.

A CSV or Parquet ratings file on local disk is streamed (Parquet batch by batch, CSV through
Arrow's streaming reader), each chunk checked as :func:`batchrank.sources.load_ratings`
checks a whole file, with the file's row numbers in messages. Other sources (MovieLens folders
and zips, ``tfds:``, object stores) are loaded whole as before, then cut into chunks. Exports
(Parquet, CSV, JSON lines, the last two maybe ``.gz`` or ``.zst``; long or nested layout) are
always streamed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchrank.errors import DataError, first_line
from batchrank.sources import ITEM, RATING, USER, Columns, load_ratings, normalise_ratings

__all__ = ["iter_export", "iter_ratings"]

EXPORT_COLUMNS = ("user_id", "movie_id", "rank")
_CSV_BLOCK = 1 << 20


def _open(path: Path) -> pa.NativeFile:
    """The file's bytes, decompressed when its suffix says so (``.gz``, ``.zst``)."""
    return pa.input_stream(str(path), compression="detect")


def _csv_names(path: Path, separator: str) -> list[str]:
    parse = pacsv.ParseOptions(delimiter=separator)
    with _open(path) as f:
        return list(pacsv.open_csv(f, parse_options=parse).schema.names)


def _csv_batches(path: Path, names: list[str], separator: str) -> Iterator[pa.RecordBatch]:
    """The named columns of a CSV file as text, block by block (an empty field is null)."""
    read = pacsv.ReadOptions(block_size=_CSV_BLOCK, use_threads=False)
    convert = pacsv.ConvertOptions(
        include_columns=names,
        column_types=dict.fromkeys(names, pa.string()),
        strings_can_be_null=True,
        null_values=[""],
    )
    parse = pacsv.ParseOptions(delimiter=separator)
    with _open(path) as f:
        yield from pacsv.open_csv(
            f, read_options=read, parse_options=parse, convert_options=convert
        )


def _missing(path: object, names: list[str], needed: list[str]) -> None:
    missing = [c for c in needed if c not in names]
    if missing:
        found = ", ".join(f"`{c}`" for c in names)
        miss = ", ".join(f"`{c}`" for c in missing)
        raise DataError(f"{path}: ratings column {miss} missing; found {found}")


def iter_ratings(spec: str | Path, columns: Columns, chunk_rows: int) -> Iterator[pa.Table]:
    """Held-out ratings as tables of ``user_id, movie_id, rating``, ``chunk_rows`` at a time."""
    text = str(spec)
    path = Path(text)
    suffix = path.suffix.lower()
    local = "://" not in text and not text.startswith("tfds:") and path.is_file()
    if not local or suffix not in (".parquet", ".csv", ".tsv", ".txt"):
        table = load_ratings(spec, columns=columns).ratings
        for lo in range(0, table.num_rows, chunk_rows):
            yield table.slice(lo, chunk_rows)
        return
    needed = list(dict.fromkeys([columns.user, columns.item, columns.rating]))
    row = 1
    try:
        if suffix == ".parquet":
            pf = pq.ParquetFile(path, pre_buffer=False)  # it would hold every batch read
            _missing(path, list(pf.schema_arrow.names), needed)
            batches: Iterator[pa.RecordBatch] = pf.iter_batches(
                batch_size=chunk_rows, columns=needed, use_threads=False
            )
        else:
            sep = "\t" if suffix == ".tsv" else ","
            _missing(path, _csv_names(path, sep), needed)
            batches = _csv_batches(path, needed, sep)
        for batch in batches:
            if not batch.num_rows:
                continue
            t = pa.table(
                {
                    USER: batch.column(columns.user),
                    ITEM: batch.column(columns.item),
                    RATING: batch.column(columns.rating),
                }
            )
            yield normalise_ratings(t, str(path), first_row=row)
            row += t.num_rows
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, pa.ArrowInvalid) and "Empty CSV file" in str(e):
            raise DataError(f"{path}: ratings file is empty") from None
        raise DataError(f"{path}: cannot read ratings file: {first_line(e)}") from e
    if row == 1:
        raise DataError(f"{path}: ratings file has no rows")


def _export_frame(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    if "items" in frame.columns:  # the nested layout
        frame = frame.explode("items").unnest("items")
    missing = [c for c in EXPORT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: not a batchrank export: column(s) {', '.join(missing)} missing; "
            f"found {', '.join(frame.columns)}",
            file=str(path),
        )
    try:
        return frame.select("user_id", "movie_id", pl.col("rank").cast(pl.Int64))
    except pl.exceptions.PolarsError as e:
        raise DataError(f"{path}: column `rank` is not integer ({e})", file=str(path)) from e


def _json_blocks(path: Path, chunk_rows: int) -> Iterator[pl.DataFrame]:
    with io.BufferedReader(_open(path)) as fh:  # type: ignore[arg-type]
        while True:
            lines = [line for _, line in zip(range(chunk_rows), fh, strict=False)]
            if not lines:
                return
            if any(line.strip() for line in lines):
                yield pl.read_ndjson(io.BytesIO(b"".join(lines)))


def _export_blocks(path: Path, chunk_rows: int) -> Iterator[pl.DataFrame]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        pf = pq.ParquetFile(path, pre_buffer=False)  # with it, memory grows with the file
        for batch in pf.iter_batches(batch_size=chunk_rows, use_threads=False):
            yield pl.from_arrow(pa.Table.from_batches([batch]))  # type: ignore[misc]
    elif ".csv" in name:
        names = _csv_names(path, ",")
        for batch in _csv_batches(path, names, ","):
            yield pl.from_arrow(pa.Table.from_batches([batch]))  # type: ignore[misc]
    else:
        yield from _json_blocks(path, chunk_rows)


def iter_export(path: Path, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """A top-k export (any format or layout batchrank writes) as ``user_id, movie_id, rank``
    frames, in file order (a nested row's items in list order)."""
    blocks = _export_blocks(path, chunk_rows)
    while True:
        try:
            frame = next(blocks, None)
        except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as e:
            raise DataError(f"{path}: cannot read the export ({e})", file=str(path)) from e
        if frame is None:
            return
        yield _export_frame(frame, path)
