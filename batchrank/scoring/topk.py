"""The streaming top-k state: exact top-k per user over any number of scored chunks.

:class:`TopK` keeps the best k rows per user in memory (ranked as :mod:`batchrank.scoring.ranking`
says). Past its memory budget it spills to anonymous temporary files, one per user range, and
reduces them one range at a time at the end, so its output stays globally sorted by user and
identical to the in-memory result. Input grouped by user in ascending order (as a retrieval job
writes it) never needs that: the users it has finished with are sealed to disk as they finish
(:mod:`batchrank.scoring.sealed`), so the state's memory does not grow with the input.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from batchrank.scoring.ranking import (
    DEFAULT_COMPACT_ROWS,
    DEFAULT_MEMORY_BUDGET,
    STATE_SHARE,
    Accumulator,
    check_k,
    ranked,
    reduce_topk,
    select_partial,
    user_chunks,
)
from batchrank.scoring.schema import partial_schema
from batchrank.scoring.schema import result_schema as _result_schema
from batchrank.scoring.sealed import DEFAULT_SEAL_BYTES, SealedRuns
from batchrank.scoring.spill import SpillFile, quantile_boundaries, split_by_users

__all__ = ["SPILL_PARTITIONS", "TopK"]

SPILL_PARTITIONS = 64
_MAX_SPLIT_DEPTH = 8
_OUT_ROWS = 1 << 20


class TopK:
    """Streaming exact top-k per user, spilling to disk by user range past a memory budget.

    Feed scored chunks with :meth:`add`; read the result once with :meth:`results`; always
    :meth:`close` (or use it as a context manager).

    Memory: ``memory_budget_bytes`` bounds the state's working memory, the transient copies of
    compacting it included: the rows held stay under
    :data:`~batchrank.scoring.ranking.STATE_SHARE` of it, and they are compacted one user
    range at a time (:class:`~batchrank.scoring.ranking.Accumulator`).

    Spilling: once the state exceeds that share, the state and every later chunk are appended
    to one anonymous temporary file per user range in ``spill_dir``: a row goes to range
    ``searchsorted(boundaries, user_id, side="right")``. Later chunks are still pruned by the
    per-user thresholds the state had when it spilled. :meth:`results` reads the ranges back in
    order, one at a time; a range larger than that share is first split again by quantiles of
    its own users. The files have
    no names, so a killed run leaves nothing behind but (at most) the empty ``spill_dir``.

    Sealing: while every chunk's users are at or above the largest user seen so far, a state
    past ``seal_bytes`` moves its rows of the users below that one (final, as long as the
    order holds) to one spill file, read back first by :meth:`results`. A chunk that breaks
    the order ends sealing and returns those rows to the state (or to the spill ranges).
    """

    def __init__(
        self,
        k: int,
        *,
        user_type: pa.DataType,
        item_type: pa.DataType,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
        spill_dir: Path | None = None,
        boundaries: pa.Array | None = None,
        compact_rows: int = DEFAULT_COMPACT_ROWS,
        seal_bytes: int | None = DEFAULT_SEAL_BYTES,
    ) -> None:
        """Create an empty state.

        Args:
            k: Rows to keep per user (>= 1).
            user_type: Arrow type ``user_id`` is cast to (``pa.int64()`` or ``pa.string()``).
            item_type: Arrow type ``movie_id`` is cast to.
            memory_budget_bytes: Working memory of the state (rows held, buffers and the
                transient copies of compacting them); past it, rows spill to disk.
            spill_dir: Folder for spill files (created when needed, removed by :meth:`close`
                when empty); default: the system temporary folder.
            boundaries: Sorted user ids splitting users into ranges for spilling (e.g.
                quantiles of the user vocabulary); default: quantiles of the state's users at
                spill time, into :data:`SPILL_PARTITIONS` ranges.
            compact_rows: Minimum buffered rows before the buffer is merged into the state.
            seal_bytes: State size past which the finished users of input in ascending user
                order are sealed to disk (None: never seal).
        """
        check_k(k)
        self.k = k
        self.user_type = user_type
        self.item_type = item_type
        self.memory_budget_bytes = max(1, int(memory_budget_bytes))
        self._rows_bytes = max(1, int(self.memory_budget_bytes * STATE_SHARE))
        """Bytes of compacted rows the state may hold before it spills."""
        self.compact_rows = max(1, int(compact_rows))
        self._spill_root = Path(spill_dir) if spill_dir is not None else None
        self._spill_folder: Path | None = None
        self._created_folder = False
        self._schema = partial_schema(user_type, item_type)
        self._result_schema = _result_schema(user_type, item_type)
        self._empty: pl.DataFrame = pl.from_arrow(self._schema.empty_table())  # type: ignore[assignment]
        self._boundaries: pl.Series | None = None
        if boundaries is not None:
            b = pl.from_arrow(pa.table({"b": pa.array(boundaries).cast(user_type)}))["b"]  # type: ignore[index]
            self._boundaries = b.drop_nulls().unique().sort()
        self._acc = self._accumulator()
        self._parts: list[SpillFile | None] = []
        self._rows_in = 0
        self._spilled = False
        self._partitions = 0
        self._spill_bytes = 0
        self._peak_rows = 0
        self._done = False
        self._closed = False
        self._threshold_of: int | None = None
        self._threshold: pl.DataFrame = pl.DataFrame()
        self._threshold_range: tuple[Any, Any] = (None, None)
        self._sealed: SealedRuns | None = None
        if seal_bytes is not None:
            self._sealed = SealedRuns(self._folder, self._schema, seal_bytes)
            # Compact at most one seal's worth of buffer at a time, so sealing keeps up.
            self._acc.compact_bytes = min(self._acc.compact_bytes, self._sealed.seal_bytes)
        self._sealed_rows = 0

    # -- feeding ---------------------------------------------------------------------------

    def add(self, table: pa.Table | pa.RecordBatch) -> None:
        """Merge a scored chunk (``user_id, movie_id, score, stars``; other columns ignored).

        Raises:
            ValueError: A column is missing.
            RuntimeError: :meth:`results` was already called.
            OutputError: A spill file cannot be written.
        """
        if self._done or self._closed:
            raise RuntimeError("top-k state already read or closed; cannot add rows")
        selected = select_partial(table)
        if selected.num_rows == 0:
            return
        self._rows_in += selected.num_rows
        df: pl.DataFrame = pl.from_arrow(selected.cast(self._schema))  # type: ignore[assignment]
        acc = self._acc
        if self._sealed is not None and not self._sealed.in_order(df):
            self._unseal()  # may start spilling
        df = self._prune(df)
        if not self._spilled:
            before = acc.version
            acc.add(df)
            if acc.version != before:
                self._peak_rows = max(self._peak_rows, acc.state_height())
                if self._sealed is not None:
                    acc.state = self._sealed.seal(acc.state)
                if acc.state_bytes() > self._rows_bytes:
                    self._start_spill()
            return
        # Spilled: the rows go straight to their ranges (sorted by user, as a partial top-k
        # already is), pruned by the thresholds the state had when it spilled. Reducing them
        # here first cut nothing: the state spills when users × k outgrows the budget, so a
        # buffer holds about one row a user; it was a second full sort of every row.
        self._write_parts(df if df["user_id"].is_sorted() else df.sort("user_id"))

    def _accumulator(self) -> Accumulator:
        return Accumulator(self.k, self._empty, self.memory_budget_bytes, self.compact_rows)

    def _prune(self, df: pl.DataFrame) -> pl.DataFrame:
        """Drop rows that cannot enter the top k, before they are buffered and sorted.

        Where the compacted state already holds k rows of a user, those are k distinct pairs
        with scores >= the k-th best, so a new row with a lower score cannot reach the top k. Ties
        are kept, so the movie-id tie-break stays exact. Profiling showed the per-chunk sort
        as the scorer's largest cost after prediction; this skips most of it once the state
        has filled up.
        """
        if not self._spilled:  # once spilled, the thresholds stay those of the last state
            self._refresh_threshold()
        if self._threshold.height == 0:
            return df
        # Input grouped in ascending user order meets the thresholds of the users before it
        # only: a chunk none of whose users has one keeps every row, without the join (the
        # join and filter were a third of the scoring loop at 10 M users x 10, py-spy).
        users = df["user_id"]
        lo, hi = self._threshold_range
        known = lo is not None and hi is not None and users.null_count() < df.height
        if known and (users.min() > hi or users.max() < lo):  # type: ignore[operator]
            return df
        return (
            df.join(self._threshold, on="user_id", how="left")
            .filter(pl.col("_thr").is_null() | (pl.col("score") >= pl.col("_thr")))
            .drop("_thr")
        )

    def _refresh_threshold(self) -> None:
        """Each user's k-th best score where the compacted state holds k rows of that user (a
        lower bound of its final k-th best, so valid for every later row)."""
        if self._threshold_of == self._acc.version:
            return
        self._threshold_of = self._acc.version
        self._threshold = (
            self._acc.state.filter(pl.col("score").is_not_nan())
            .group_by("user_id")
            .agg(pl.col("score").min().alias("_thr"), pl.len().alias("_n"))
            .filter(pl.col("_n") >= self.k)
            .select("user_id", "_thr")
        )
        thr_users = self._threshold["user_id"]
        self._threshold_range = (thr_users.min(), thr_users.max())

    def _folder(self) -> Path:
        if self._spill_folder is None:
            root = self._spill_root or Path(tempfile.gettempdir())
            self._created_folder = not root.exists()
            self._spill_folder = root
        return self._spill_folder

    def _unseal(self) -> None:
        """The input went back to an earlier user: end sealing, return the sealed rows."""
        sealed, self._sealed = self._sealed, None
        assert sealed is not None
        self._acc.compact_bytes = self._acc.default_compact_bytes
        if not sealed.rows:
            return
        if sealed.bytes + self._acc.state_bytes() > self._rows_bytes:
            self._sealed = sealed  # _start_spill moves them to the spill ranges
            self._start_spill()
            return
        for batch in sealed.batches():
            self._acc.push(batch)
        sealed.close()

    def _start_spill(self) -> None:
        state = self._acc.state
        sealed, self._sealed = self._sealed, None
        if self._boundaries is None:
            users = state["user_id"]
            if sealed is not None:
                users = pl.concat([users, *(b["user_id"] for b in sealed.batches())])
            self._boundaries = quantile_boundaries(users, SPILL_PARTITIONS)
        self._refresh_threshold()
        self._spilled = True
        self._partitions = self._boundaries.len() + 1
        self._parts = [None] * self._partitions
        self._write_parts(state)
        self._acc.state = self._empty
        self._acc.compact_bytes = self._acc.default_compact_bytes
        if sealed is not None:
            for batch in sealed.batches():
                self._write_parts(batch)
            sealed.close()
        self._flush_buffer()

    def _write_parts(self, df: pl.DataFrame) -> None:
        assert self._boundaries is not None
        for part, rows in split_by_users(df, self._boundaries):
            spill = self._parts[part]
            if spill is None:
                spill = self._parts[part] = SpillFile(self._folder(), self._schema)
            spill.write(rows)

    def _flush_buffer(self) -> None:
        reduced = self._acc.take_buffer()
        if reduced is not None:
            self._write_parts(reduced)

    # -- reading ---------------------------------------------------------------------------

    def results(self) -> Iterator[pa.Table]:
        """Yield the final ranked rows, once.

        Yields:
            Tables with columns ``user_id, rank, movie_id, stars, score`` (see
            :data:`RESULT_COLUMNS`), globally sorted by user_id then rank; a user's rows are
            never split across two tables.

        Raises:
            RuntimeError: Called a second time, or after :meth:`close`.
        """
        if self._done or self._closed:
            raise RuntimeError("top-k results can be read only once, before close()")
        self._done = True
        if not self._spilled:
            state = self._acc.compact()
            self._peak_rows = max(self._peak_rows, state.height)
            self._acc.state = self._empty
            sealed, self._sealed = self._sealed, None
            if sealed is not None:
                yield from self._read_sealed(sealed)
            yield from user_chunks(ranked(state, self._result_schema), _OUT_ROWS)
            return
        self._flush_buffer()
        for i, spill in enumerate(self._parts):
            if spill is None:
                continue
            self._parts[i] = None
            for df in self._drain(spill, 0):
                yield from user_chunks(ranked(df, self._result_schema), _OUT_ROWS)

    def _read_sealed(self, sealed: SealedRuns) -> Iterator[pa.Table]:
        """The sealed users, ranked, in tables of about :data:`_OUT_ROWS` rows."""
        self._sealed_rows = sealed.rows
        self._spill_bytes += sealed.bytes
        group: list[pl.DataFrame] = []
        rows = 0
        for batch in sealed.batches():
            group.append(batch)
            rows += batch.height
            if rows >= _OUT_ROWS:
                yield from user_chunks(ranked(pl.concat(group), self._result_schema), _OUT_ROWS)
                group, rows = [], 0
        if group:
            yield from user_chunks(ranked(pl.concat(group), self._result_schema), _OUT_ROWS)
        sealed.close()

    def _drain(self, spill: SpillFile, depth: int) -> Iterator[pl.DataFrame]:
        """Reduce one spilled range, splitting it first when it exceeds the budget."""
        try:
            size = spill.finish()
            self._spill_bytes += size
            if size > self._rows_bytes and depth < _MAX_SPLIT_DEPTH:
                users = pl.concat([df["user_id"].unique() for df in spill.batches()])
                parts = max(2, math.ceil(2 * size / self._rows_bytes))
                bounds = quantile_boundaries(users, min(SPILL_PARTITIONS, parts))
                del users
                if bounds.len():
                    subs: list[SpillFile | None] = [None] * (bounds.len() + 1)
                    try:
                        for batch in spill.batches():
                            for part, rows in split_by_users(reduce_topk(batch, self.k), bounds):
                                sub = subs[part]
                                if sub is None:
                                    sub = subs[part] = SpillFile(self._folder(), self._schema)
                                sub.write(rows)
                        spill.close()
                        self._partitions += len(subs) - 1
                        for j, sub in enumerate(subs):
                            if sub is not None:
                                subs[j] = None
                                yield from self._drain(sub, depth + 1)
                    finally:
                        for sub in subs:
                            if sub is not None:
                                sub.close()
                    return
            acc = self._accumulator()
            for batch in spill.batches():
                acc.add(batch)
            spill.close()
            state = acc.compact()
            self._peak_rows = max(self._peak_rows, state.height)
            yield state
        finally:
            spill.close()

    # -- bookkeeping -----------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """``rows_in``, ``spilled``, ``partitions`` (spill ranges, counting re-splits),
        ``peak_state_rows``, ``spill_bytes`` (bytes read back from spill files) and
        ``sealed_rows`` (rows of finished users sealed to disk, see :mod:`.sealed`)."""
        sealed = self._sealed.rows if self._sealed is not None else self._sealed_rows
        return {
            "rows_in": self._rows_in,
            "spilled": self._spilled,
            "partitions": self._partitions,
            "peak_state_rows": max(self._peak_rows, self._acc.peak_rows),
            "spill_bytes": self._spill_bytes,
            "sealed_rows": sealed,
        }

    def close(self) -> None:
        """Free the state and spill files; remove ``spill_dir`` if this state created it."""
        self._closed = True
        for i, spill in enumerate(self._parts):
            if spill is not None:
                spill.close()
                self._parts[i] = None
        if self._sealed is not None:
            self._sealed.close()
            self._sealed = None
        self._acc = self._accumulator()
        if self._spill_folder is not None and self._created_folder:
            with contextlib.suppress(OSError):
                self._spill_folder.rmdir()

    def __enter__(self) -> TopK:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
