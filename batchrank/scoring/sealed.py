"""Sealed runs: the users that input grouped in ascending user order has finished with.

A retrieval job writes each user's candidates together, users in order, so once a row of user
``v`` has arrived no row of a user below ``v`` follows. While that holds, the top-k state's rows
of those earlier users are final: :class:`SealedRuns` moves them out of memory into one
anonymous spill file (already reduced and sorted, exactly as the state held them), so the state
holds about one chunk's users instead of every user of the run, and its memory does not grow
with the input. :meth:`batchrank.scoring.topk.TopK.results` reads the file back in order, ahead
of the users still in memory.

The order is checked, not assumed: every chunk's smallest user is compared with the largest
seen so far. The first chunk that goes back below it ends sealing for the run; the sealed rows
then return to the state (or, past the memory budget, to the spill ranges), and the result is
the same as if nothing had been sealed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from batchrank.scoring.spill import SpillFile

__all__ = ["DEFAULT_SEAL_BYTES", "SealedRuns"]

DEFAULT_SEAL_BYTES = 16 << 20
"""State size past which finished users are sealed; the state's rows are then at most about
this much, plus what one compaction buffers (also this much while sealing)."""


class SealedRuns:
    """Finished users of input in ascending user order, on disk, in output order."""

    def __init__(self, folder: Callable[[], Path], schema: pa.Schema, seal_bytes: int) -> None:
        """Args:
        folder: where the spill file goes (called once, when the first rows are sealed).
        schema: the partial schema the rows are written in.
        seal_bytes: state size (``estimated_size``) past which :meth:`seal` moves rows out.
        """
        self._folder = folder
        self._schema = schema
        self.seal_bytes = max(1, int(seal_bytes))
        self._frontier: Any = None
        self._file: SpillFile | None = None
        self.rows = 0
        self.seals = 0

    def in_order(self, df: pl.DataFrame) -> bool:
        """Note a chunk's users; False when it goes back below a user already seen (or holds
        a null user): from then on sealed rows may be incomplete."""
        users = df["user_id"]
        if users.null_count():
            return False
        lo, hi = users.min(), users.max()
        if self._frontier is not None and lo < self._frontier:  # type: ignore[operator]
            return False
        if self._frontier is None or hi > self._frontier:  # type: ignore[operator]
            self._frontier = hi
        return True

    def seal(self, state: pl.DataFrame) -> pl.DataFrame:
        """Move the rows of users below the largest user seen out of a compacted state (sorted
        by user) once it exceeds ``seal_bytes``; return the rows that stay."""
        if self._frontier is None or state.estimated_size() <= self.seal_bytes:
            return state
        cut = int(state["user_id"].search_sorted(self._frontier, side="left"))
        if cut == 0:
            return state
        if self._file is None:
            self._file = SpillFile(self._folder(), self._schema)
        self._file.write(state.slice(0, cut))
        self.rows += cut
        self.seals += 1
        return state.slice(cut)

    @property
    def bytes(self) -> int:
        """Size of the sealed rows on disk (0 when none)."""
        return self._file.finish() if self._file is not None else 0

    def batches(self) -> Iterator[pl.DataFrame]:
        """The sealed rows in order, as written (each batch holds complete users)."""
        if self._file is not None:
            yield from self._file.batches()

    def close(self) -> None:
        """Drop the spill file."""
        if self._file is not None:
            self._file.close()
            self._file = None
