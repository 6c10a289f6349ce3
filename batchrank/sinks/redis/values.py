"""Keys, values and ``SET`` commands for a batch of users, built column-wise from Arrow.

A user's value is the ``items`` list of the nested layout as the JSON Lines writer writes it
(polars' JSON: shortest round-trip floats, NaN and infinities as ``null``, titles escaped as
JSON strings, non-ASCII kept as UTF-8), so ``json.loads(value)`` equals the ``items`` of the
user's line in a ``--layout nested`` ``.jsonl`` output; tests/sinks check it byte for byte.
``compact`` values hold the movie ids only: ``[50,181,1]``.

The protocol bytes are built per *item* with one ``concat_str``: the first item of a user
carries the user's ``SET`` header (``*3 $3 SET $<n> <key> $<n>``, CRLF-separated) and ``[``,
every item its JSON object, then ``,`` or, for the last one, ``]`` and CRLF. The result's Arrow
data buffer is the whole batch of commands, sent as it is: no Python code runs per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.scoring.row_groups import run_starts
from batchrank.sinks.redis.slots import prefixed_slots
from batchrank.sinks.redis.target import ValueFormat

__all__ = ["Encoded", "key_values", "set_commands"]

_CONTROL = r"[\x00-\x1f]"


def _json_strings(values: pa.Array) -> pa.Array:
    """The JSON string literal of each string (``null`` for nulls), as polars writes them."""
    frame = pl.Series("s", values, dtype=pl.String).to_frame()
    if frame.select(pl.col("s").str.contains(_CONTROL).any()).item():
        # rare: polars' own encoder escapes control characters
        expr = pl.struct("s").struct.json_encode().str.slice(5).str.head(-1)
    else:
        escaped = pl.col("s").str.replace_all("\\", "\\\\", literal=True)
        escaped = escaped.str.replace_all('"', '\\"', literal=True)
        quoted = pl.concat_str(pl.lit('"'), escaped, pl.lit('"'))
        expr = pl.when(pl.col("s").is_null()).then(pl.lit("null")).otherwise(quoted)
    return _string_array(frame.select(expr).to_series())


def _string_array(series: pl.Series) -> pa.Array:
    arr = series.cast(pl.Binary).to_arrow()  # faster than a string view's own conversion
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.string())


def _floats(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """``stars`` and ``score`` as the writer prints them: float32 (schema.long_schema),
    shortest round trip, ``null`` for NaN and infinities (Arrow's own cast prints differently)."""
    frame = pl.from_arrow(table.select(["stars", "score"]))
    assert isinstance(frame, pl.DataFrame)
    cols = [pl.col(c).cast(pl.Float32) for c in ("stars", "score")]
    if frame.select(pl.all_horizontal(c.is_finite().all() for c in cols)).item():
        exprs = [c.cast(pl.String) for c in cols]
    else:
        exprs = [
            pl.when(c.is_finite()).then(c.cast(pl.String)).otherwise(pl.lit("null")) for c in cols
        ]
    out = frame.select(exprs)
    return _string_array(out.to_series(0)), _string_array(out.to_series(1))


def _first_rows(codes: np.ndarray, m: int) -> np.ndarray:
    """The first row of each of ``m`` codes (every code occurs)."""
    first = np.empty(m, np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # the last write is the first row
    return first


_SCORE = ',"score":'
_TAILS = ("},", "}]\r\n")
_COMPACT_TAILS = (",", "]\r\n")


@dataclass(frozen=True)
class _Part:
    """A column of string parts, as a small dictionary and each item's index into it."""

    values: pa.Array
    index: np.ndarray

    def lengths(self) -> np.ndarray:
        return np.asarray(pc.binary_length(self.values).to_numpy(), np.int64)[self.index]


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _movie_part(table: pa.Table, value: ValueFormat) -> _Part:
    """Per item: ``,"movie_id":50,"title":"..","stars":`` (``{"rank":..`` comes before it), or
    the movie id's JSON for ``compact``; encoded once per distinct movie. Titles come from the
    items file joined by movie id (titles.py), one per movie; that is checked, not assumed."""
    movie = table.column("movie_id").combine_chunks()
    encoded = pc.dictionary_encode(movie)
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64)
    movies = encoded.dictionary
    if value != "compact":
        title = table.column("title").combine_chunks()
        first = _first_rows(codes, len(movies))
        title_codes = pc.dictionary_encode(title, null_encoding="encode").indices.to_numpy(
            zero_copy_only=False
        )
        if not np.array_equal(title_codes[first][codes], title_codes):  # not one per movie
            movies, codes, first = movie, np.arange(len(codes)), np.arange(len(codes))
    movie_json = _json_strings(movies) if _is_string(movies.type) else pc.cast(movies, pa.string())
    if value == "compact":
        return _Part(movie_json, codes)
    titles = _json_strings(pc.take(title, pa.array(first)))
    frag = pc.binary_join_element_wise(
        ',"movie_id":', movie_json, ',"title":', titles, ',"stars":', ""
    )
    return _Part(frag, codes)


def _rank_part(table: pa.Table) -> _Part:
    rank = np.asarray(table.column("rank").to_numpy(), np.int64)
    top = int(rank.max()) if len(rank) else 0
    return _Part(pa.array([f'{{"rank":{r}' for r in range(top + 1)]), rank)


def _check(table: pa.Table, value: ValueFormat) -> None:
    names = ["user_id", "movie_id"] if value == "compact" else [
        "user_id", "rank", "movie_id", "title", "stars", "score"
    ]  # fmt: skip
    missing = [c for c in names if c not in table.schema.names]
    if missing:
        raise ValueError(f"ranked rows lack columns {missing}")


@dataclass(frozen=True)
class _Layout:
    """A batch's items as parts: the first part's dictionary and index (which the users'
    headers join), the other columns, each item's tail index, and each item's length."""

    first: _Part
    middle: list[pa.Array]
    tails: pa.Array
    last: np.ndarray
    lengths: np.ndarray
    """Bytes of each item: its JSON, then ``,`` or, for a user's last item, ``]`` CRLF."""


def _layout(table: pa.Table, value: ValueFormat, starts: np.ndarray) -> _Layout:
    n = table.num_rows
    last = np.zeros(n, np.int64)
    last[starts[1:] - 1] = 1
    last[-1:] = 1
    movie = _movie_part(table, value)
    if value == "compact":
        first, middle, tails = movie, [], pa.array(_COMPACT_TAILS)
    else:
        first = _rank_part(table)
        stars, score = _floats(table)
        movies = pc.take(movie.values, pa.array(movie.index))
        middle = [movies, stars, None, score]  # None: the ,"score": literal
        tails = pa.array(_TAILS)
    lengths = first.lengths() + np.asarray(pc.binary_length(tails).to_numpy(), np.int64)[last]
    if value != "compact":
        lengths += movie.lengths() + len(_SCORE)
        lengths += np.asarray(pc.binary_length(stars).to_numpy(), np.int64)
        lengths += np.asarray(pc.binary_length(score).to_numpy(), np.int64)
    return _Layout(first, middle, tails, last, lengths)


def _items(layout: _Layout, starts: np.ndarray, heads: pa.Array | None) -> pa.Array:
    """Each item's bytes, the first of each user after ``heads[k]``. A head goes into the first
    part's dictionary (one entry per user), so the one big concatenation over the items has no
    mostly-empty column."""
    values, index = layout.first.values.cast(pa.string()), layout.first.index
    if heads is not None and len(starts):
        own = pc.binary_join_element_wise(heads, pc.take(values, pa.array(index[starts])), "")
        index = index.copy()
        index[starts] = len(values) + np.arange(len(starts))
        values = pa.concat_arrays([values, own.cast(pa.string())])
    columns: list[Any] = [pc.take(values, pa.array(index))]
    columns += [_SCORE if c is None else c for c in layout.middle]
    columns.append(pc.take(layout.tails, pa.array(layout.last)))
    return pc.binary_join_element_wise(*columns, "")


def key_values(table: pa.Table, key_prefix: str, value: ValueFormat) -> pl.DataFrame:
    """One row per user of ``table`` (ranked rows of complete users, grouped): ``key``
    (``key_prefix + user_id``) and ``value`` (the JSON list); for checks and the benchmark."""
    _check(table, value)
    starts = run_starts(table.column("user_id"))
    items = _items(_layout(table, value, starts), starts, None)
    return (
        pl.DataFrame({"user_id": pl.Series(table.column("user_id")).cast(pl.String), "v": items})
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("v").str.join(""))
        .select(
            key=pl.concat_str(pl.lit(key_prefix), "user_id"),
            value=pl.concat_str(pl.lit("["), pl.col("v").str.head(-2)),  # drop the CRLF
        )
    )


@dataclass(frozen=True)
class Encoded:
    """The ``SET`` commands of a batch of users, as protocol bytes."""

    data: memoryview
    users: int
    key_bytes: int
    value_bytes: int
    nodes: np.ndarray | None = None
    """With a cluster's slot map: each user's node, ascending (the commands were reordered so)."""
    offsets: np.ndarray | None = None
    """With ``nodes``: where each user's command starts in ``data``, and the end."""


def _by_node(resp: pa.Array, starts: np.ndarray, nodes: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """The users' commands (``resp``'s items, from each user's first) reordered so that each
    node's are together, stably: one ``take`` over a per-user view of the same bytes."""
    width = pa.large_binary() if pa.types.is_large_string(resp.type) else pa.binary()
    bounds = _offsets(resp)[np.append(starts, len(resp))]
    dtype = np.int64 if width == pa.large_binary() else np.int32
    per_user = pa.Array.from_buffers(
        width, len(starts), [None, pa.py_buffer(bounds.astype(dtype)), resp.buffers()[2]]
    )
    order = np.argsort(nodes, kind="stable")
    grouped = per_user.take(pa.array(order))
    return grouped, _offsets(grouped)


def set_commands(
    table: pa.Table, key_prefix: str, value: ValueFormat, owner: np.ndarray | None = None
) -> Encoded:
    """``SET key value`` for every user of ``table`` (complete users, grouped), concatenated;
    with a cluster's slot map ``owner`` (slot -> node), grouped by node (:attr:`Encoded.nodes`)."""
    _check(table, value)
    if table.num_rows == 0:
        return Encoded(memoryview(b""), 0, 0, 0)
    starts = run_starts(table.column("user_id"))
    users = pc.cast(table.column("user_id").combine_chunks().take(pa.array(starts)), pa.string())
    keys = pc.binary_join_element_wise(key_prefix, users, "")
    key_len = pc.binary_length(keys)
    layout = _layout(table, value, starts)  # the headers hold the values' lengths
    value_len = np.add.reduceat(layout.lengths, starts) - 1  # "[" ... "]", without the final CRLF
    header = pc.binary_join_element_wise(
        "*3\r\n$3\r\nSET\r\n$", pc.cast(key_len, pa.string()), "\r\n", keys, "\r\n$",
        pa.array(value_len.astype(str)), "\r\n[", "",
    )  # fmt: skip
    resp = _items(layout, starts, header)
    nodes = offsets = None
    if owner is not None:
        nodes = owner[prefixed_slots(key_prefix, users)]
        resp, offsets = _by_node(resp, starts, nodes)
        nodes = np.sort(nodes, kind="stable")
        offsets -= offsets[0]
    return Encoded(
        _buffer(resp),
        len(starts),
        int(pc.sum(key_len).as_py()),
        int(value_len.sum()),
        nodes,
        offsets,
    )


def _offsets(arr: pa.Array) -> np.ndarray:
    """A string or binary array's ``len + 1`` offsets into its data buffer."""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    width = np.int64 if large else np.int32
    offsets = np.frombuffer(arr.buffers()[1], width)[arr.offset : arr.offset + len(arr) + 1]
    return offsets.astype(np.int64)


def _buffer(arr: pa.Array) -> memoryview:
    """The concatenated bytes of a string array (its data buffer, not copied again)."""
    if len(arr) == 0:
        return memoryview(b"")
    offsets = _offsets(arr)
    return memoryview(arr.buffers()[2])[int(offsets[0]) : int(offsets[-1])]
