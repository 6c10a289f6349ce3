"""Spill files of the top-k state: user ranges on disk as anonymous Arrow IPC streams.

:class:`SpillFile` is one stream in an unnamed temporary file (a killed run leaves nothing
behind); :func:`quantile_boundaries` and :func:`split_by_users` cut rows sorted by user into
ranges. Used by :class:`batchrank.scoring.topk.TopK` and its sealed runs
(:mod:`batchrank.scoring.sealed`).
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl
import pyarrow as pa

from batchrank.errors import OutputError

__all__ = ["SpillFile", "quantile_boundaries", "split_by_users"]


class SpillFile:
    """One user range on disk: an Arrow IPC stream in an anonymous temporary file."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.file: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        except OSError as e:
            raise OutputError(f"{folder}: cannot create spill file ({e.strerror or e})") from e
        self.folder = folder
        self.schema = schema
        self.writer: Any = pa.ipc.new_stream(self.file, schema)
        self.rows = 0

    def write(self, df: pl.DataFrame) -> None:
        try:
            self.writer.write_table(df.to_arrow().cast(self.schema))
        except OSError as e:
            raise OutputError(f"{self.folder}: cannot write spill file ({e.strerror or e})") from e
        self.rows += df.height

    def finish(self) -> int:
        """Close the stream for writing; return its size in bytes."""
        try:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            self.file.flush()
        except OSError as e:
            raise OutputError(f"{self.folder}: cannot write spill file ({e.strerror or e})") from e
        return self.file.tell()

    def batches(self) -> Iterator[pl.DataFrame]:
        self.finish()
        self.file.seek(0)
        for batch in pa.ipc.open_stream(self.file):
            yield pl.from_arrow(batch)  # type: ignore[misc]

    def close(self) -> None:
        """Drop the spill file (cleanup: a full disk's flush error here must not hide the
        error that is being reported)."""
        with contextlib.suppress(Exception):
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        with contextlib.suppress(OSError):
            self.file.close()


def quantile_boundaries(users: pl.Series, parts: int) -> pl.Series:
    """``parts - 1`` (or fewer) sorted distinct user ids splitting ``users`` evenly."""
    users = users.unique().sort()
    n = users.len()
    parts = min(parts, n)
    if parts <= 1:
        return users.head(0)
    pos = np.unique((np.arange(1, parts) * n) // parts)
    return users.gather(pos.tolist())


def split_by_users(df: pl.DataFrame, boundaries: pl.Series) -> Iterator[tuple[int, pl.DataFrame]]:
    """Non-empty ``(partition, rows)`` of a frame sorted by user; partition of a user ``u`` is
    ``searchsorted(boundaries, u, side="right")``."""
    if df.height == 0:
        return
    cuts = (
        df["user_id"].search_sorted(boundaries, side="left").to_list() if boundaries.len() else []
    )
    edges = [0, *cuts, df.height]
    for part, (lo, hi) in enumerate(itertools.pairwise(edges)):
        if hi > lo:
            yield part, df.slice(lo, hi - lo)
