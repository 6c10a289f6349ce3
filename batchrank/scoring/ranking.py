"""The ranking contract and the pure top-k functions over scored tables.

Ranking order (docs/DESIGN.md): the raw ``score`` descending, then ``movie_id`` ascending; NaN
or null scores rank last, like -inf. Never the displayed ``stars``: they are clipped to the
rating scale, so every item predicted above the top of the scale would tie there and be ordered
by id. A ``(user_id, movie_id)`` pair seen several times is kept once: its copies carry the same
score (docs/DESIGN.md), which the de-duplication relies on; copies with different scores would
be kept apart.

:func:`partial_topk` applies to any split of the rows; :func:`merge_partials` and
:class:`batchrank.scoring.topk.TopK` (the streaming state) combine the partials exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa

from batchrank.scoring.schema import PARTIAL_COLUMNS, RESULT_COLUMNS, partial_schema
from batchrank.scoring.schema import result_schema as _result_schema

__all__ = [
    "BUFFER_SHARE",
    "DEFAULT_COMPACT_ROWS",
    "DEFAULT_MEMORY_BUDGET",
    "PARTIAL_COLUMNS",
    "PIECE_SHARE",
    "RESULT_COLUMNS",
    "STATE_SHARE",
    "Accumulator",
    "add_rank",
    "check_k",
    "merge_partials",
    "partial_schema",
    "partial_topk",
    "ranked",
    "reduce_topk",
    "run_thresholds",
    "select_partial",
    "user_chunks",
]

DEFAULT_MEMORY_BUDGET = 512 << 20
DEFAULT_COMPACT_ROWS = 1 << 20
STATE_SHARE = 0.6
"""Share of the top-k memory budget the compacted rows may hold before they spill."""
BUFFER_SHARE = 0.1
"""Share of the budget buffered before a compaction."""
PIECE_SHARE = 1 / 16
"""Share of the budget reduced at once by a compaction (state and buffer rows of one user
range): :func:`reduce_topk` takes about 2.3× its input on top of it (measured: 518 MiB over
229 MiB of rows), so the transient stays near a fifth of the budget, and the state, the buffer,
its sorted copy and that transient about the budget."""
_NEG_INF = float("-inf")


def check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"top-k needs k >= 1; received {k}")


def select_partial(table: pa.Table | pa.RecordBatch) -> pa.Table:
    missing = [c for c in PARTIAL_COLUMNS if c not in table.schema.names]
    if missing:
        raise ValueError(f"top-k input lacks columns {missing}; has {table.schema.names}")
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return table.select(list(PARTIAL_COLUMNS))


def _position_in_user() -> pl.Expr:
    """0-based position of each row within its run of equal ``user_id`` (rows sorted by user)."""
    idx = pl.int_range(pl.len(), dtype=pl.Int64)
    new_user = pl.col("user_id").ne_missing(pl.col("user_id").shift(1))
    return idx - pl.when(new_user).then(idx).otherwise(None).forward_fill()


def reduce_topk(df: pl.DataFrame, k: int) -> pl.DataFrame:
    """Sort by (user asc, score desc, movie asc), drop duplicate pairs, keep k.

    Duplicates of a pair carry the same score (docs/DESIGN.md), so the sort makes them
    adjacent and a shift comparison drops them (a hash ``unique`` costs more than the sort
    itself). One filter does both cuts (a row's position counts only the distinct pairs before
    it), so the sorted copy is the only full-size intermediate: the peak is about 2.3× the
    rows' size on top of them (see :data:`PIECE_SHARE`), where two filters made it 3×.
    """
    if df.height == 0:
        return df
    ordered = df.sort(
        [
            pl.col("user_id"),
            pl.col("score").fill_nan(_NEG_INF).fill_null(_NEG_INF),
            pl.col("movie_id"),
        ],
        descending=[False, True, False],
    )
    user, movie = pl.col("user_id"), pl.col("movie_id")
    new_user = user.ne_missing(user.shift(1)) | pl.int_range(pl.len()).eq(0)
    distinct = new_user | movie.ne_missing(movie.shift(1))
    seen = distinct.cast(pl.Int64).cum_sum()
    position = seen - pl.when(new_user).then(seen).otherwise(None).forward_fill()
    return ordered.filter(distinct & (position < k))


def run_thresholds(groups: np.ndarray, score: np.ndarray, k: int) -> np.ndarray | None:
    """Rows that can enter their user's top ``k``, from runs of equal ``groups``; None: all.

    ``groups`` is the user's vocabulary index (``u``): rows of one user are adjacent when the
    input is grouped by user, as a retrieval job writes it. Within each run the k-th largest
    *distinct* score is a safe threshold: k distinct scores mean k distinct pairs (copies of a
    pair share their score), so a row below it cannot be in the top k, and ties are kept, so
    the exact sort that follows still breaks them by movie id. NaN ranks last (as -inf). Index
    0 (the OOV row, shared by every unknown user under ``--unknown oov``) is never cut.

    Runs go into a padded ``runs × longest`` matrix sorted row by row, so the work is
    vectorised; None (keep everything) when runs are too short to cut anything or too uneven
    to pad.
    """
    n = len(groups)
    if n == 0:
        return None
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(groups[1:], groups[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    runs = len(starts)
    if runs * 2 * k > n:  # mean run not longer than 2k: little to cut
        return None
    lengths = np.diff(np.append(starts, n))
    longest = int(lengths.max())
    if runs * longest > 4 * n:
        return None
    clean = np.where(np.isnan(score), np.float32(-np.inf), score).astype(np.float32, copy=False)
    row = np.repeat(np.arange(runs), lengths)
    col = np.arange(n) - np.repeat(starts, lengths)
    grid = np.full((runs, longest), np.inf, dtype=np.float32)  # padding ranks last
    grid[row, col] = -clean  # ascending sort of the negation: best first
    grid.sort(axis=1)
    distinct = np.ones(grid.shape, dtype=np.int32)
    distinct[:, 1:] = grid[:, 1:] != grid[:, :-1]
    np.cumsum(distinct, axis=1, out=distinct)
    at_k = distinct >= k
    first = np.argmax(at_k, axis=1)
    thr = np.where(at_k[np.arange(runs), first], -grid[np.arange(runs), first], -np.inf)
    keep = clean >= thr.astype(np.float32)[row]
    keep |= groups == 0
    return keep


def partial_topk(table: pa.Table, k: int) -> pa.Table:
    """The best ``k`` rows per user of a scored table.

    Exact and deterministic, so it can be applied to any split of the rows and the partial
    results merged with :func:`merge_partials` (or fed to :class:`TopK`). A table that also
    carries the users' vocabulary indices (column ``u``) is first cut with
    :func:`run_thresholds` (rows grouped by user then skip most of the sort).

    Args:
        table: Scored rows with ``user_id``, ``movie_id``, ``score``, ``stars`` (other
            columns are dropped) and optionally ``u``. Id types are kept.
        k: How many rows to keep per user (>= 1).

    Returns:
        Columns ``user_id, movie_id, score, stars``, duplicates of ``(user_id, movie_id)``
        removed, at most ``k`` rows per user, sorted by user_id asc, score desc, movie_id asc.

    Raises:
        ValueError: ``k`` < 1 or a column is missing.
    """
    check_k(k)
    if "u" in table.schema.names and table.num_rows and not table.column("score").null_count:
        groups = np.asarray(table.column("u").to_numpy())
        keep = run_thresholds(groups, np.asarray(table.column("score").to_numpy()), k)
        if keep is not None:
            table = table.filter(pa.array(keep))
    selected = select_partial(table)
    out = reduce_topk(pl.from_arrow(selected), k)  # type: ignore[arg-type]
    return out.to_arrow().cast(selected.schema)


def add_rank(table: pa.Table) -> pa.Table:
    """Add a 1-based int32 ``rank`` to a partial top-k table (as sorted by :func:`partial_topk`).

    Returns:
        Columns ``user_id, rank, movie_id, stars, score``.
    """
    selected = select_partial(table)
    schema = _result_schema(
        selected.schema.field("user_id").type, selected.schema.field("movie_id").type
    )
    return ranked(pl.from_arrow(selected), schema)  # type: ignore[arg-type]


def ranked(df: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    out = df.select(
        "user_id",
        (_position_in_user() + 1).cast(pl.Int32).alias("rank"),
        "movie_id",
        "stars",
        "score",
    )
    return out.to_arrow().cast(schema)


def user_chunks(table: pa.Table, target_rows: int) -> Iterator[pa.Table]:
    """Slices of about ``target_rows`` rows that never cut a user's rows apart."""
    n = table.num_rows
    if n <= target_rows:
        if n:
            yield table
        return
    users = pl.from_arrow(table.select(["user_id"]))["user_id"]  # type: ignore[index]
    starts = np.flatnonzero(users.ne_missing(users.shift(1)).to_numpy())
    cuts = starts[np.searchsorted(starts, np.arange(target_rows, n, target_rows), side="right") - 1]
    edges = [0, *sorted({int(c) for c in cuts if c > 0}), n]
    for lo, hi in itertools.pairwise(edges):
        yield table.slice(lo, hi - lo)


class Accumulator:
    """Buffered exact reduction: compacts when the buffer outgrows the state (amortised).

    The state is kept as pieces, each a user range sorted as :func:`reduce_topk` sorts, the
    ranges ascending, so their concatenation is the sorted state. A compaction reduces one user
    range of the state and the buffer at a time and frees the old piece of a range as soon as
    it is replaced, so its transient memory is about ``(state + buffer) / ranges`` ×
    2.3 rather than the whole state's: ranges are cut so that each holds at most
    ``piece_bytes``. ``budget_bytes`` is the working memory this is sized from.
    """

    def __init__(self, k: int, empty: pl.DataFrame, budget_bytes: int, compact_rows: int) -> None:
        self.k = k
        self.empty = empty
        self.pieces: list[pl.DataFrame] = []
        self.version = 0
        """Changes whenever the state does (to cache what is derived from it)."""
        self.buffer: list[pl.DataFrame] = []
        self.buffer_rows = 0
        self.buffer_bytes = 0
        self.budget_bytes = budget_bytes
        self.default_compact_bytes = max(1, int(budget_bytes * BUFFER_SHARE))
        self.compact_bytes = self.default_compact_bytes
        """Buffered bytes that trigger a compaction (whatever the rows)."""
        self.piece_bytes = max(1, int(budget_bytes * PIECE_SHARE))
        """Largest user range (state and buffer rows) reduced at once."""
        self.compact_rows = compact_rows
        self.peak_rows = 0

    @property
    def state(self) -> pl.DataFrame:
        """The compacted rows, sorted (one frame over the pieces, not a copy)."""
        if not self.pieces:
            return self.empty
        return self.pieces[0] if len(self.pieces) == 1 else pl.concat(self.pieces, rechunk=False)

    @state.setter
    def state(self, df: pl.DataFrame) -> None:
        self.pieces = [df] if df.height else []
        self.version += 1

    def state_bytes(self) -> int:
        return sum(int(p.estimated_size()) for p in self.pieces)

    def push(self, df: pl.DataFrame) -> None:
        """Buffer rows without compacting."""
        self.buffer.append(df)
        self.buffer_rows += df.height
        self.buffer_bytes += int(df.estimated_size())

    def add(self, df: pl.DataFrame) -> None:
        if df.height == 0:
            return
        self.push(df)
        if self.buffer_rows >= max(4 * self.state_height(), self.compact_rows) or (
            self.buffer_bytes >= self.compact_bytes
        ):
            self.compact()

    def state_height(self) -> int:
        return sum(p.height for p in self.pieces)

    def compact(self) -> pl.DataFrame:
        if self.buffer:
            state_bytes = self.state_bytes()
            ranges = -(-(state_bytes + self.buffer_bytes) // self.piece_bytes)
            if ranges <= 1 or not self.pieces:
                frames = [*self.pieces, *self.buffer]
                self.pieces = []
                # no rechunk: the sort gathers the rows into one new frame anyway
                merged = reduce_topk(pl.concat(frames, how="vertical", rechunk=False), self.k)
                self.pieces = [merged] if merged.height else []
            else:
                self._compact_by_range(ranges)
            self.buffer, self.buffer_rows, self.buffer_bytes = [], 0, 0
            self.version += 1
            self.peak_rows = max(self.peak_rows, self.state_height())
        return self.state

    def _compact_by_range(self, ranges: int) -> None:
        """Reduce the state and the buffer one user range at a time (see the class doc)."""
        buffered = pl.concat(self.buffer, how="vertical", rechunk=False).sort("user_id")
        self.buffer = []
        old = self.pieces
        self.pieces = []
        state = pl.concat(old, rechunk=False) if len(old) > 1 else old[0]
        users = state["user_id"]
        cuts = users.gather(
            np.unique((np.arange(1, ranges) * state.height) // ranges).tolist()
        ).unique(maintain_order=True)
        s_edges = [0, *users.search_sorted(cuts, side="left").to_list(), state.height]
        b_edges = [
            0,
            *buffered["user_id"].search_sorted(cuts, side="left").to_list(),
            buffered.height,
        ]
        del state, users
        piece_ends = np.cumsum([p.height for p in old])
        done = 0  # old pieces fully replaced (and released)
        for r in range(len(s_edges) - 1):
            lo, hi = s_edges[r], s_edges[r + 1]
            part = [*_rows_of(old, piece_ends, lo, hi)]
            b = buffered.slice(b_edges[r], b_edges[r + 1] - b_edges[r])
            if b.height:
                part.append(b)
            if part:
                merged = reduce_topk(pl.concat(part, how="vertical", rechunk=False), self.k)
                if merged.height:
                    self.pieces.append(merged)
            del part, b
            while done < len(old) and piece_ends[done] <= hi:
                old[done] = self.empty  # drop the reference: its rows are replaced
                done += 1

    def take_buffer(self) -> pl.DataFrame | None:
        """Reduce and return the buffered rows alone, leaving the state untouched."""
        if not self.buffer:
            return None
        out = reduce_topk(pl.concat(self.buffer, how="vertical", rechunk=False), self.k)
        self.buffer, self.buffer_rows, self.buffer_bytes = [], 0, 0
        return out


def _rows_of(
    pieces: list[pl.DataFrame], ends: np.ndarray, lo: int, hi: int
) -> Iterator[pl.DataFrame]:
    """Rows ``lo:hi`` of the concatenation of ``pieces`` (``ends``: their cumulative heights),
    as slices of the pieces (no copy)."""
    start = 0
    for piece, end in zip(pieces, ends.tolist(), strict=True):
        a, b = max(lo, start), min(hi, end)
        if b > a:
            yield piece.slice(a - start, b - a)
        start = end


def merge_partials(
    tables: Iterable[pa.Table],
    k: int,
    *,
    user_type: pa.DataType | None = None,
    item_type: pa.DataType | None = None,
) -> pa.Table:
    """Merge partial top-k tables (or any scored tables) into one exact partial top-k.

    Args:
        tables: Tables with the :data:`PARTIAL_COLUMNS`; streamed, buffered and compacted.
        k: Rows to keep per user.
        user_type: Arrow type of ``user_id``; defaults to the first table's.
        item_type: Arrow type of ``movie_id``; defaults to the first table's.

    Returns:
        As :func:`partial_topk` of the concatenation of ``tables`` (int64 ids when both the
        types and the tables are absent).
    """
    check_k(k)
    acc: Accumulator | None = None
    schema: pa.Schema | None = None
    for table in tables:
        selected = select_partial(table)
        if schema is None:
            schema = partial_schema(
                user_type or selected.schema.field("user_id").type,
                item_type or selected.schema.field("movie_id").type,
            )
            empty = pl.from_arrow(schema.empty_table())
            acc = Accumulator(k, empty, DEFAULT_MEMORY_BUDGET, DEFAULT_COMPACT_ROWS)  # type: ignore[arg-type]
        assert acc is not None
        acc.add(pl.from_arrow(selected.cast(schema)))  # type: ignore[arg-type]
    if acc is None or schema is None:
        schema = partial_schema(user_type or pa.int64(), item_type or pa.int64())
        return schema.empty_table()
    return acc.compact().to_arrow().cast(schema)
