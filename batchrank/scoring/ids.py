"""Id stage of the scorer: cast raw ids, reject bad rows, map ids to vocabulary indices.

:func:`map_ids` turns a :class:`~batchrank.scoring.reader.RawChunk` into a :class:`MappedChunk`
with the columns ``user_id``, ``movie_id`` (cast to the vocabularies' kinds), ``u`` and ``i``
(int32 indices, 0 = OOV). Rows with a null or unparsable id go to a rejects table, which
:class:`batchrank.scoring.rejects.RejectsWriter` appends to a CSV file. Everything is vectorised.

Reasons, one per rejected row, the first that applies in this order: ``null_user_id``,
``bad_user_id``, ``null_movie_id``, ``bad_movie_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.errors import DataError
from batchrank.scoring.reader import ITEM, USER, RawChunk
from batchrank.scoring.schema import REJECTS_SCHEMA
from batchrank.vocab import OOV_INDEX, Vocabulary, coerce_ids

__all__ = [
    "COUNT_KEYS",
    "REJECTS_SCHEMA",
    "REJECT_REASONS",
    "MappedChunk",
    "UnknownPolicy",
    "empty_counts",
    "map_ids",
]

UnknownPolicy = Literal["skip", "oov", "fail"]

REJECT_REASONS = ("null_user_id", "bad_user_id", "null_movie_id", "bad_movie_id")
"""Reject reasons, in priority order (a row gets the first that applies)."""

COUNT_KEYS = (
    "read",
    "rejected_null_user_id",
    "rejected_null_movie_id",
    "rejected_bad_user_id",
    "rejected_bad_movie_id",
    "unknown_user",
    "unknown_movie",
    "oov_user",
    "oov_movie",
    "kept",
)
"""Keys of :attr:`MappedChunk.counts`, always all present."""

_ID_TYPES = {"int": pa.int64(), "str": pa.string()}


def empty_counts() -> dict[str, int]:
    """Counts with every key of :data:`COUNT_KEYS` at 0 (handy for summing chunks)."""
    return dict.fromkeys(COUNT_KEYS, 0)


@dataclass
class MappedChunk:
    """A chunk with ids checked and mapped.

    Attributes:
        table: columns ``user_id``, ``movie_id`` (``int64`` or ``string``, the vocabularies'
            kinds), ``u`` and ``i`` (int32 vocabulary indices, 0 = OOV).
        counts: rows per outcome, keys :data:`COUNT_KEYS`.
        rejects: rejected rows (:data:`REJECTS_SCHEMA`), or None when there are none.
    """

    table: pa.Table
    counts: dict[str, int] = field(default_factory=empty_counts)
    rejects: pa.Table | None = None


def _as_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return pc.cast(arr, pa.string())


def _rejects_table(
    chunk: RawChunk, raw_u: pa.Array, raw_i: pa.Array, code: np.ndarray
) -> pa.Table | None:
    idx = np.flatnonzero(code)
    if len(idx) == 0:
        return None
    take = pa.array(idx)
    return pa.table(
        {
            "file": pa.nulls(len(idx), pa.string()).fill_null(str(chunk.path)),
            "row": pa.array(idx.astype(np.int64) + chunk.first_row),
            USER: _as_text(raw_u.take(take)),
            ITEM: _as_text(raw_i.take(take)),
            "reason": pa.array(REJECT_REASONS).take(pa.array(code[idx] - 1)),
        },
        schema=REJECTS_SCHEMA,
    )


def _strip_plus(arr: pa.Array, kind: str) -> pa.Array:
    """Drop a leading ``+`` from text ids bound for an integer vocabulary.

    :func:`~batchrank.vocab.coerce_ids` accepts ``"+5"`` but Arrow's cast then fails on it; a
    no-op (one fast substring scan) for text without ``+``.
    """
    if kind != "int" or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return arr
    if not pc.any(pc.match_substring(arr, "+")).as_py():
        return arr
    trimmed = pc.utf8_trim_whitespace(arr)
    return pc.replace_substring_regex(trimmed, r"^\+(\d)", r"\1", max_replacements=1)


def _show(value: object) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def map_ids(
    chunk: RawChunk, users: Vocabulary, items: Vocabulary, *, unknown: UnknownPolicy
) -> MappedChunk:
    """Cast, check and map a chunk's ids.

    Both id columns are cast to their vocabulary's kind with :func:`batchrank.vocab.coerce_ids`.
    Rows with a null id or an id that does not parse (``"abc"`` or ``"1.5"`` for integer ids)
    are rejected. The rest are looked up; ids not in a vocabulary are handled by ``unknown``:

    - ``"skip"``: drop the row, counted as ``unknown_user`` or else ``unknown_movie`` (a row
      unknown in both counts once, as ``unknown_user``);
    - ``"oov"``: keep it with index 0, counted in ``oov_user`` and ``oov_movie`` (independently:
      each counts the ids replaced by the OOV row);
    - ``"fail"``: raise :class:`DataError` naming the file, row and id.

    A chunk that already carries ``u`` and ``i`` (from
    :func:`~batchrank.scoring.reader.iter_cross_join`) is taken as cast and looked up; only the
    unknown policy applies.

    Args:
        chunk: raw ids from the reader.
        users: the bundle's user vocabulary.
        items: the bundle's movie vocabulary.
        unknown: the ``--unknown`` policy.

    Returns:
        The kept rows with their indices, the counts and the rejected rows.

    Raises:
        DataError: an id column is neither integer nor string typed, or (``"fail"``) an id is
            not in its vocabulary.
    """
    table = chunk.table
    n = table.num_rows
    counts = empty_counts()
    counts["read"] = n
    user_col, item_col = chunk.source_columns
    rejects = None
    if "u" in table.column_names and "i" in table.column_names:
        uid, iid = _column(table, USER), _column(table, ITEM)
        u = np.asarray(_column(table, "u").to_numpy(zero_copy_only=False), dtype=np.int32)
        i = np.asarray(_column(table, "i").to_numpy(zero_copy_only=False), dtype=np.int32)
        rows = np.arange(n, dtype=np.int64)
    else:
        raw_u, raw_i = _column(table, USER), _column(table, ITEM)
        # ids beyond int64 (long text, uint64 Parquet) are rejected rows, as any unparsable id
        uid, bad_u = coerce_ids(
            _strip_plus(raw_u, users.kind),
            users.kind,
            where=f"{chunk.path}: column `{user_col}`",
            overflow="bad",
        )
        iid, bad_i = coerce_ids(
            _strip_plus(raw_i, items.kind),
            items.kind,
            where=f"{chunk.path}: column `{item_col}`",
            overflow="bad",
        )
        null_u = raw_u.is_null().to_numpy(zero_copy_only=False)
        null_i = raw_i.is_null().to_numpy(zero_copy_only=False)
        # reason codes 1..4 index REJECT_REASONS; later assignments win, so go lowest first
        code = np.zeros(n, dtype=np.int8)
        code[bad_i] = 4
        code[null_i] = 3
        code[bad_u] = 2
        code[null_u] = 1
        tally = np.bincount(code, minlength=5)
        for c, reason in enumerate(REJECT_REASONS, start=1):
            counts[f"rejected_{reason}"] = int(tally[c])
        rejects = _rejects_table(chunk, raw_u, raw_i, code)
        valid = code == 0
        rows = np.flatnonzero(valid)
        if len(rows) < n:
            mask = pa.array(valid)
            uid, iid = uid.filter(mask), iid.filter(mask)
        u = users.lookup(uid) if len(rows) else np.zeros(0, dtype=np.int32)
        i = items.lookup(iid) if len(rows) else np.zeros(0, dtype=np.int32)

    unk_u = u == OOV_INDEX
    unk_i = i == OOV_INDEX
    keep: np.ndarray | None = None
    if unknown == "fail":
        unk = unk_u | unk_i
        if unk.any():
            k = int(np.flatnonzero(unk)[0])
            what, value = ("user", uid[k]) if unk_u[k] else ("movie", iid[k])
            raise DataError.at(
                chunk.path,
                chunk.first_row + int(rows[k]),
                f"unknown {what} id {_show(value.as_py())} "
                "(not in the model's vocabulary; --unknown fail)",
            )
    elif unknown == "skip":
        counts["unknown_user"] = int(unk_u.sum())
        counts["unknown_movie"] = int((unk_i & ~unk_u).sum())
        if counts["unknown_user"] or counts["unknown_movie"]:
            keep = ~(unk_u | unk_i)
    elif unknown == "oov":
        counts["oov_user"] = int(unk_u.sum())
        counts["oov_movie"] = int(unk_i.sum())
    else:
        raise ValueError(f"unknown must be 'skip', 'oov' or 'fail'; received {unknown!r}")

    if keep is not None:
        mask = pa.array(keep)
        uid, iid, u, i = uid.filter(mask), iid.filter(mask), u[keep], i[keep]
    out = pa.table(
        {
            USER: pc.cast(uid, _ID_TYPES[users.kind]),
            ITEM: pc.cast(iid, _ID_TYPES[items.kind]),
            "u": pa.array(u, type=pa.int32()),
            "i": pa.array(i, type=pa.int32()),
        }
    )
    counts["kept"] = out.num_rows
    return MappedChunk(table=out, counts=counts, rejects=rejects)
