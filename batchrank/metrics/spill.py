"""Rows grouped by user range, memory bounded: the evaluation's held-out pairs and lists.

Rows (int64 columns, the first a user's vocabulary index) arrive in any order; they are
buffered and, past :data:`FLUSH_BYTES`, appended to one file per range of ``chunk_users``
users (``u // chunk_users``). Reading gives each range's rows in arrival order, one range at a
time, so the evaluation holds one chunk of users, never all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["FLUSH_BYTES", "RangeSpill"]

FLUSH_BYTES = 16 << 20
"""Buffered bytes past which rows are appended to the range files."""


class RangeSpill:
    """Rows of ``columns`` int64 values, grouped by ``row[0] // chunk_users``.

    Args:
        folder: where the range files go (created when first needed).
        columns: values per row (the first is the user index).
        chunk_users: users per range (>= 1).
        flush_bytes: buffered bytes past which rows go to disk (default :data:`FLUSH_BYTES`).
    """

    def __init__(
        self, folder: Path, columns: int, chunk_users: int, flush_bytes: int | None = None
    ) -> None:
        if chunk_users < 1:
            raise ValueError(f"chunk_users must be at least 1; received {chunk_users}")
        self.folder = folder
        self.columns = columns
        self.chunk_users = chunk_users
        self.flush_bytes = FLUSH_BYTES if flush_bytes is None else flush_bytes
        self.pending: list[np.ndarray] = []
        self.held = 0
        self.spilled = False
        self.ranges: set[int] = set()
        self.rows = 0

    def add(self, *cols: np.ndarray) -> None:
        """Append rows (one array per column, the same length)."""
        rows = np.stack([np.asarray(c, dtype=np.int64) for c in cols], axis=1)
        if not len(rows):
            return
        self.pending.append(rows)
        self.held += rows.nbytes
        self.rows += len(rows)
        if self.held > self.flush_bytes:
            self._flush()

    def _grouped(self) -> Iterator[tuple[int, np.ndarray]]:
        """The buffered rows by range, in arrival order within each range."""
        if not self.pending:
            return
        rows = np.concatenate(self.pending)
        self.pending, self.held = [], 0
        r = rows[:, 0] // self.chunk_users
        order = np.argsort(r, kind="stable")
        rows, r = rows[order], r[order]
        cuts = np.flatnonzero(np.diff(r)) + 1
        for part in np.split(np.arange(len(r)), cuts):
            yield int(r[part[0]]), rows[part]

    def _flush(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spilled = True
        for r, rows in self._grouped():
            self.ranges.add(r)
            with (self.folder / f"range-{r:09d}.bin").open("ab") as fh:
                rows.tofile(fh)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(range, rows)`` for each range holding rows, ranges ascending; consumes the rows."""
        if not self.spilled:
            yield from self._grouped()
            return
        self._flush()
        for r in sorted(self.ranges):
            path = self.folder / f"range-{r:09d}.bin"
            rows = np.fromfile(path, dtype=np.int64).reshape(-1, self.columns)
            path.unlink()
            yield r, rows
