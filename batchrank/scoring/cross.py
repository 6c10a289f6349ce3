"""The ``--pairs all`` source: every user x every movie, generated chunk by chunk, and the
``--users`` subset that limits it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from batchrank.errors import DataError, first_line
from batchrank.fs import is_remote
from batchrank.scoring.discover import discover_inputs
from batchrank.scoring.reader import (
    ALL_PAIRS_PATH,
    ITEM,
    USER,
    RawChunk,
    csv_header,
    parquet_file,
    require_columns,
)
from batchrank.store_errors import remote_reason
from batchrank.vocab import IdKind, coerce_ids, id_kind_of

__all__ = ["iter_cross_join", "read_user_subset"]


def iter_cross_join(
    users: pa.Array,
    n_items: int,
    item_ids: pa.Array,
    *,
    chunk_rows: int,
    user_index: np.ndarray | None = None,
    item_index: np.ndarray | None = None,
) -> Iterator[RawChunk]:
    """Every (user, movie) pair, user-major, generated chunk by chunk (never materialised).

    Args:
        users: user ids, in output order, of the user vocabulary's kind.
        n_items: number of movies, ``len(item_ids)``.
        item_ids: movie ids (normally the items vocabulary's ``ids``), of its kind.
        chunk_rows: rows per chunk, at least 1 (the last chunk may be shorter).
        user_index: optional vocabulary indices of ``users`` (0 for unknown users, for instance
            ``users_vocab.lookup(users)``).
        item_index: optional vocabulary indices of ``item_ids`` (``1..n`` for the whole
            vocabulary). Give both or neither: with both, every chunk also carries int32 ``u``
            and ``i`` columns and :func:`batchrank.scoring.ids.map_ids` skips the id cast and
            lookup (it still applies the unknown-id policy to index 0). Without them the chunks
            go through the same checks as file input.

    Yields:
        Chunks with ``path`` ``<all>``, ``file_index`` 0 and ``first_row`` the 1-based pair
        number.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1; received {chunk_rows}")
    if (user_index is None) != (item_index is None):
        raise ValueError("give both user_index and item_index, or neither")
    if isinstance(users, pa.ChunkedArray):
        users = users.combine_chunks()
    items = item_ids.combine_chunks() if isinstance(item_ids, pa.ChunkedArray) else item_ids
    if n_items != len(items):
        raise ValueError(f"n_items is {n_items} but {len(items)} item ids were given")
    n_users = len(users)
    if user_index is not None and item_index is not None:
        user_index = np.asarray(user_index, dtype=np.int32)
        item_index = np.asarray(item_index, dtype=np.int32)
        if len(user_index) != n_users or len(item_index) != n_items:
            raise ValueError("user_index and item_index must match users and items in length")
    total = n_users * n_items
    for start in range(0, total, chunk_rows):
        pos = np.arange(start, min(start + chunk_rows, total), dtype=np.int64)
        u_pos, i_pos = np.divmod(pos, n_items)
        cols: dict[str, pa.Array] = {
            USER: users.take(pa.array(u_pos)),
            ITEM: items.take(pa.array(i_pos)),
        }
        if user_index is not None and item_index is not None:
            cols["u"] = pa.array(user_index[u_pos], type=pa.int32())
            cols["i"] = pa.array(item_index[i_pos], type=pa.int32())
        yield RawChunk(table=pa.table(cols), file_index=0, path=ALL_PAIRS_PATH, first_row=start + 1)


def read_user_subset(
    path: Path, user_col: str = USER, *, kind: IdKind | None = None, noun: str = "user"
) -> pa.Array:
    """Read a ``--users`` file: a small .csv or .parquet file with a user id column.

    ``noun`` names the ids in messages (``movie`` for ``--deny-items`` / ``--allow-items``).

    Args:
        path: the file (read whole).
        user_col: its user id column.
        kind: when given, cast the ids to this vocabulary kind and reject unparsable ones.

    Returns:
        The distinct user ids in file order (strings for CSV unless ``kind`` says otherwise).

    Raises:
        DataError: the file is missing, empty, of another type, unreadable, lacks the column,
            has ids of another type, a null id, or (with ``kind``) an unparsable id.
    """
    files = discover_inputs([path])
    if len(files) != 1:
        raise DataError(f"{path}: expected one .csv or .parquet file of {noun} ids")
    file = files[0]
    try:
        if file.format == "csv":
            require_columns(file.path, csv_header(file.path), [user_col])
            table = pacsv.read_csv(
                file.path.open("rb") if is_remote(file.path) else file.path,
                convert_options=pacsv.ConvertOptions(
                    include_columns=[user_col],
                    column_types={user_col: pa.string()},
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
        else:
            schema = parquet_file(file.path).schema_arrow
            require_columns(file.path, schema.names, [user_col])
            table = parquet_file(file.path).read(columns=[user_col])
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        why = remote_reason(e) if is_remote(file.path) else first_line(e)
        raise DataError(f"{file.path}: cannot read {file.format} data ({why})") from e
    ids = table.column(user_col).combine_chunks()
    where = f"{file.path}: column `{user_col}`"
    id_kind_of(ids, where=where)
    if pa.types.is_dictionary(ids.type):
        ids = ids.dictionary_decode()
    if len(ids) == 0:
        raise DataError(f"{file.path}: no {noun} ids in column `{user_col}`")
    if ids.null_count:
        row = pc.index(pc.is_null(ids), True).as_py() + 1
        raise DataError(f"{file.path} row {row}: missing {noun} id in column `{user_col}`")
    if kind is not None:
        cast, bad = coerce_ids(ids, kind, where=where)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{file.path} row {row + 1}: bad {noun} id {ids[row].as_py()!r}; "
                "expected an integer"
            )
        ids = cast
    return pc.unique(ids)
