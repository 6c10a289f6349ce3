"""Input stage of the scorer: check the input files' headers, stream them in chunks.

Finding the files is :mod:`batchrank.scoring.discover`; the ``--pairs all`` source is
:mod:`batchrank.scoring.cross`.

Everything here is a pure function over files and Arrow tables, so the local streaming engine
and the Ray Data engine share it. Chunks carry the *raw* id values renamed to ``user_id`` and
``movie_id``; :mod:`batchrank.scoring.ids` casts and maps them.

Memory stays bounded by the chunk size: Parquet files are read batch by batch, CSV files through
Arrow's streaming reader (``pyarrow.csv.open_csv``) in blocks of :data:`CSV_BLOCK_BYTES`, and
both are re-cut into chunks of exactly ``chunk_rows`` rows (the last chunk of a file may be
shorter). Chunks never span two files. (Arrow's CSV reader reads a fixed number of blocks ahead,
about 32 MiB, whatever the file size.)
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchrank.errors import DataError, first_line
from batchrank.fs import is_remote, open_stream, redact
from batchrank.store_errors import KNOWN_REASONS, remote_reason
from batchrank.vocab import id_kind_of

__all__ = [
    "ALL_PAIRS_PATH",
    "CSV_BLOCK_BYTES",
    "ITEM",
    "USER",
    "InputFile",
    "RawChunk",
    "WorkUnit",
    "chunk_work",
    "csv_header",
    "iter_chunks",
    "parquet_file",
    "require_columns",
    "total_work",
    "validate_inputs",
]

USER = "user_id"
ITEM = "movie_id"
ALL_PAIRS_PATH = Path("<all>")
"""The ``path`` of chunks that :func:`iter_cross_join` generates."""
CSV_BLOCK_BYTES = 1 << 20
"""Bytes Arrow's CSV reader parses at a time (a CSV line must fit in one block)."""
_HEADER_MAX_BYTES = 1 << 20

WorkUnit = Literal["rows", "bytes"]


@dataclass(frozen=True)
class InputFile:
    """One input file.

    Attributes:
        path: the resolved (absolute) path.
        format: ``"parquet"`` or ``"csv"``.
        size: size in bytes.
        mtime: modification time, seconds since the epoch.
        rows: data rows, from the Parquet footer; None for CSV (and for an unreadable footer,
            which :func:`validate_inputs` reports).
    """

    path: Path
    format: Literal["parquet", "csv"]
    size: int
    mtime: float
    rows: int | None

    def to_manifest(self) -> dict[str, Any]:
        """The file as a manifest entry (``mtime`` as ISO-8601 UTC)."""
        mtime = datetime.fromtimestamp(self.mtime, tz=UTC).isoformat().replace("+00:00", "Z")
        return {
            "path": redact(str(self.path)),
            "format": self.format,
            "size_bytes": self.size,
            "mtime": mtime,
            "rows": self.rows,
        }


@dataclass
class RawChunk:
    """A slice of one input file, ids not yet checked.

    Attributes:
        table: columns ``user_id`` and ``movie_id`` holding the raw values (renamed from the
            file's columns; always strings for CSV). Chunks from :func:`iter_cross_join` may
            also carry int32 ``u`` and ``i`` vocabulary indices, and then their ids are already
            of the vocabularies' kinds.
        file_index: position of the file in the list given to :func:`iter_chunks`.
        path: the file (``<all>`` for generated pairs).
        first_row: 1-based data-row number of the chunk's first row within its file.
        nbytes: approximate bytes of the file this chunk accounts for; the chunks of a file sum
            to its size exactly (see :func:`chunk_work`). None for generated pairs.
        source_columns: the file's names of the user and movie columns, for messages.
    """

    table: pa.Table
    file_index: int
    path: Path
    first_row: int
    nbytes: int | None = None
    source_columns: tuple[str, str] = (USER, ITEM)


# ---------------------------------------------------------------------------------------------
# validation


def require_columns(path: Path, names: Sequence[str], needed: Sequence[str]) -> None:
    for col in dict.fromkeys(needed):
        count = list(names).count(col)
        if count > 1:
            raise DataError(
                f"{path}: column `{col}` appears {count} times; ambiguous, expected one column "
                "of that name"
            )
    missing = list(dict.fromkeys(c for c in needed if c not in names))
    if missing:
        miss = ", ".join(f"`{c}`" for c in missing)
        found = ", ".join(f"`{c}`" for c in names) or "no columns"
        raise DataError(f"{path}: column {miss} missing; found {found}")


def _why(path: Path, e: BaseException) -> str:
    """An error's reason: the store's (redacted, one line) for an object, else Arrow's."""
    return remote_reason(e) if is_remote(path) else first_line(e)


def csv_header(path: Path) -> list[str]:
    try:
        if is_remote(path):
            with open_stream(path) as s:
                head = io.BufferedReader(s, 1 << 16).readline(_HEADER_MAX_BYTES)  # type: ignore[arg-type]
        else:
            with path.open("rb") as f:
                head = f.readline(_HEADER_MAX_BYTES)
    except OSError as e:
        raise DataError(
            f"{path}: cannot read file ({_why(path, e) if is_remote(path) else e.strerror})"
        ) from e
    try:
        return pacsv.read_csv(io.BytesIO(head)).column_names
    except (pa.ArrowException, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV file ({first_line(e)})") from e


def parquet_file(path: Path) -> pq.ParquetFile:
    """A Parquet file's reader; an object is read by ranged requests (its footer, then only
    the projected columns' chunks, coalesced by ``pre_buffer``). A local file is read without
    ``pre_buffer``: with it, ``iter_batches`` keeps every buffered range until the file is
    closed, so memory grew with the file (204 MiB of Arrow memory after 60 M rows)."""
    try:
        if is_remote(path):
            return pq.ParquetFile(path.open("rb"), pre_buffer=True)
        return pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError, ValueError) as e:
        why = _why(path, e)
        if why in KNOWN_REASONS:  # the store failed, not the file
            raise DataError(f"{path}: cannot read ({why})") from e
        raise DataError(f"{path}: not a readable Parquet file ({why})") from e


def validate_inputs(files: Sequence[InputFile], *, user_col: str, item_col: str) -> None:
    """Open every file's header before any work is done.

    Reads each Parquet footer and each CSV header line, checks the id columns are there and, for
    Parquet, that they are integer or string typed (CSV ids are read as text and checked row by
    row later).

    Raises:
        DataError: naming the first file that is unreadable, lacks a column or has ids of
            another type.
    """
    needed = [user_col, item_col]
    for f in files:
        if f.format == "csv":
            require_columns(f.path, csv_header(f.path), needed)
            continue
        schema = parquet_file(f.path).schema_arrow
        require_columns(f.path, schema.names, needed)
        for col in dict.fromkeys(needed):
            id_kind_of(pa.array([], type=schema.field(col).type), where=f"{f.path}: column `{col}`")


# ---------------------------------------------------------------------------------------------
# streaming


def _rechunk(
    batches: Iterable[tuple[pa.RecordBatch, float]], chunk_rows: int
) -> Iterator[tuple[pa.Table, float]]:
    """Re-cut batches into tables of exactly ``chunk_rows`` rows (the last: fewer).

    Each batch comes with the bytes of the file it stands for; each table comes out with the
    bytes consumed up to its end, spreading a batch's bytes evenly over its rows.
    """
    buf: deque[tuple[pa.RecordBatch, float]] = deque()
    buffered = 0
    pos = 0.0

    def take(k: int) -> pa.Table:
        nonlocal buffered, pos
        parts = []
        buffered -= k
        while k:
            batch, rate = buf[0]
            if batch.num_rows <= k:
                buf.popleft()
                part = batch
            else:
                buf[0] = (batch.slice(k), rate)
                part = batch.slice(0, k)
            parts.append(part)
            k -= part.num_rows
            pos += part.num_rows * rate
        return pa.Table.from_batches(parts).combine_chunks()

    for batch, nbytes in batches:
        if batch.num_rows == 0:
            continue
        buf.append((batch, nbytes / batch.num_rows))
        buffered += batch.num_rows
        while buffered >= chunk_rows:
            table = take(chunk_rows)
            yield table, pos
    if buffered:
        table = take(buffered)
        yield table, pos


def _rename(table: pa.Table, user_col: str, item_col: str) -> pa.Table:
    return pa.table({USER: table.column(user_col), ITEM: table.column(item_col)})


def _parquet_tables(
    file: InputFile, user_col: str, item_col: str, chunk_rows: int
) -> Iterator[tuple[pa.Table, int]]:
    pf = parquet_file(file.path)
    total = pf.metadata.num_rows
    columns = list(dict.fromkeys([user_col, item_col]))
    # one row group at a time: over all of them at once, pre_buffer (objects) fetches and
    # holds every row group's id columns before the first batch, memory growing with the file
    batches = (
        batch
        for group in range(pf.num_row_groups)
        for batch in pf.iter_batches(
            batch_size=chunk_rows, row_groups=[group], columns=columns, use_threads=False
        )
    )
    per_row = file.size / max(total, 1)
    for table, end in _rechunk(((b, b.num_rows * per_row) for b in batches), chunk_rows):
        yield table, round(end)


def _csv_tables(
    file: InputFile, user_col: str, item_col: str, chunk_rows: int, bad_row: list[Any]
) -> Iterator[tuple[pa.Table, int]]:
    def on_invalid(row: Any) -> str:
        bad_row.append(row)
        return "error"

    columns = list(dict.fromkeys([user_col, item_col]))
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False)
    parse = pacsv.ParseOptions(invalid_row_handler=on_invalid)
    convert = pacsv.ConvertOptions(
        include_columns=columns,
        column_types={c: pa.string() for c in columns},
        strings_can_be_null=True,
        null_values=[""],
    )
    with open_stream(file.path) if is_remote(file.path) else pa.OSFile(str(file.path)) as f:
        reader = pacsv.open_csv(f, read_options=read, parse_options=parse, convert_options=convert)
        # Arrow parses one block per batch: count each batch as a block's worth of bytes
        blocks = ((b, float(CSV_BLOCK_BYTES)) for b in reader)
        for table, end in _rechunk(blocks, chunk_rows):
            yield table, min(round(end), file.size)


def _stream_error(file: InputFile, e: BaseException, bad_row: list[Any]) -> DataError:
    if bad_row:
        row = bad_row[-1]
        return DataError.at(
            file.path,
            row.number - 1 if row.number else None,
            f"expected {row.expected_columns} fields, found {row.actual_columns} "
            f"({row.text[:80]!r})",
        )
    what = "csv" if file.format == "csv" else "parquet"
    why = _why(file.path, e)
    return DataError(f"{file.path}: cannot read {what} data ({why})", file=str(file.path))


def iter_chunks(
    files: Sequence[InputFile], *, user_col: str, item_col: str, chunk_rows: int
) -> Iterator[RawChunk]:
    """Stream the files' id columns in chunks of exactly ``chunk_rows`` rows.

    Parquet files are read with ``ParquetFile.iter_batches``; CSV files with Arrow's streaming
    CSV reader, both id columns read as strings (so one bad value cannot stop the stream; ids are
    cast later by :func:`batchrank.scoring.ids.map_ids`, and an empty field is null). Only the
    last chunk of each file may be shorter; chunks never span two files.

    Args:
        files: from :func:`discover_inputs` (checked by :func:`validate_inputs`).
        user_col: the files' user id column.
        item_col: the files' movie id column.
        chunk_rows: rows per chunk, at least 1.

    Yields:
        Raw chunks, in file order.

    Raises:
        DataError: a file cannot be read (truncated or corrupt data, a CSV row with the wrong
            number of fields: the message names the file and, where Arrow knows it, the row).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1; received {chunk_rows}")
    for index, file in enumerate(files):
        first_row = 1
        done_bytes = 0
        bad_row: list[Any] = []
        stream = (
            _csv_tables(file, user_col, item_col, chunk_rows, bad_row)
            if file.format == "csv"
            else _parquet_tables(file, user_col, item_col, chunk_rows)
        )
        pending: RawChunk | None = None
        try:
            for table, end in stream:
                if pending is not None:
                    yield pending
                pending = RawChunk(
                    table=_rename(table, user_col, item_col),
                    file_index=index,
                    path=file.path,
                    first_row=first_row,
                    nbytes=max(end - done_bytes, 0),
                    source_columns=(user_col, item_col),
                )
                done_bytes = max(end, done_bytes)
                first_row += table.num_rows
        except DataError:
            raise
        except (pa.ArrowException, OSError, ValueError, KeyError) as e:
            raise _stream_error(file, e, bad_row) from e
        if pending is not None:
            # the last chunk of a file accounts for whatever bytes are left
            pending.nbytes = (pending.nbytes or 0) + file.size - done_bytes
            yield pending


# ---------------------------------------------------------------------------------------------
# progress


def total_work(files: Sequence[InputFile]) -> tuple[int, WorkUnit]:
    """The work ahead, for a progress bar: total rows if every file is Parquet, else bytes."""
    if files and all(f.format == "parquet" and f.rows is not None for f in files):
        return sum(f.rows or 0 for f in files), "rows"
    return sum(f.size for f in files), "bytes"


def chunk_work(chunk: RawChunk, file: InputFile, unit: WorkUnit | None = None) -> int:
    """Progress made by one chunk, in the unit :func:`total_work` returned.

    In ``"rows"`` it is the chunk's row count. In ``"bytes"`` it is ``chunk.nbytes``: for CSV
    the bytes Arrow's reader had consumed when the chunk was cut, minus those of the chunk before
    (read-ahead makes it approximate); for Parquet the file size times the chunk's share of the
    rows. Either way the chunks of a file add up to its size exactly.

    Args:
        chunk: a chunk from :func:`iter_chunks`.
        file: the file it came from.
        unit: the unit from :func:`total_work`; pass it whenever inputs may mix formats. Without
            it, rows for Parquet files with a known row count, bytes otherwise.
    """
    if unit is None:
        unit = "rows" if file.format == "parquet" and file.rows is not None else "bytes"
    if unit == "rows":
        return chunk.table.num_rows
    if chunk.nbytes is not None:
        return chunk.nbytes
    if file.rows:
        return file.size * chunk.table.num_rows // file.rows
    return 0
