"""The ``--exclude`` set: (user, movie) pairs never to recommend, memory bounded.

Pairs are streamed from files, folders or globs chunk by chunk and held as a sorted array of
``u * items.size + i`` (int64 vocabulary indices, 8 bytes a pair). Past the memory budget they
are appended to 256 user-range partition files on disk, each then sorted and de-duplicated; a
lookup loads only the partitions its users fall in (a few cached), so a ``--pairs all`` chunk,
being user-major, touches one or two.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.errors import DataError
from batchrank.scoring import discover, reader
from batchrank.scoring.schema import MOVIE_ID, USER_ID, I, U

if TYPE_CHECKING:
    from batchrank.vocab import Vocabulary

__all__ = ["PARTITIONS", "ExcludeSet", "load_exclude", "pair_text", "sorted_unique"]

PARTITIONS = 256
"""User-range partitions of an exclude set past its memory budget."""
_CACHED_PARTS = 4
_TALLY_KEYS = 1 << 22
"""Keys split at a time by :meth:`ExcludeSet.tallies` (its temporary arrays: 64 MiB)."""


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys)`` by sorting: numpy 2.4's hash-based ``unique`` of int64 keys spread
    over a wide range takes 20x longer (48 s against 2 s for 3.3 M keys here)."""
    out = np.sort(keys)
    if len(out) < 2:
        return out
    keep = np.empty(len(out), dtype=bool)
    keep[0] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


def pair_text(users: pa.Array, items: pa.Array) -> pa.Array:
    """One text key per raw (user, movie) pair, for the rows the OOV row scores."""
    return pc.binary_join_element_wise(
        pc.cast(users, pa.string()), pc.cast(items, pa.string()), "\x1f"
    )


@dataclass
class ExcludeSet:
    """(user, movie) pairs never to recommend, by vocabulary index, in memory or partitioned.

    Attributes:
        stride: ``items.size``: a pair's key is ``u * stride + i``.
        n_users: ``users.size`` (the partitions split ``0..n_users`` into equal ranges).
        keys: sorted unique keys, when held in memory; None when partitioned.
        folder: the partition files (``part-NNN.npy``, each sorted and unique) otherwise.
        unknown: text keys (:func:`pair_text`) of pairs with an id the model lacks, kept only
            for ``--unknown oov`` (sorted), else None.
        pairs: distinct known pairs held.
        unknown_pairs: rows naming an id the model lacks.
    """

    stride: int
    n_users: int
    keys: np.ndarray | None = None
    folder: Path | None = None
    unknown: pa.Array | None = None
    pairs: int = 0
    unknown_pairs: int = 0
    _cache: OrderedDict[int, np.ndarray] = field(default_factory=OrderedDict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # Ray actors load their own partitions
        return state

    def part_of(self, u: np.ndarray) -> np.ndarray:
        """The partition of each user index."""
        return (u.astype(np.int64) * PARTITIONS) // max(self.n_users, 1)

    def _part(self, p: int) -> np.ndarray:
        cached = self._cache.get(p)
        if cached is None:
            assert self.folder is not None
            path = self.folder / f"part-{p:03d}.npy"
            cached = np.load(path) if path.exists() else np.zeros(0, np.int64)
            self._cache[p] = cached
            if len(self._cache) > _CACHED_PARTS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(p)
        return cached

    def contains(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Whether each known (u, i) pair is excluded (rows with index 0 are never matched)."""
        key = u.astype(np.int64) * self.stride + i
        if self.keys is not None:
            return _member(key, self.keys)
        hit = np.zeros(len(key), dtype=bool)
        parts = self.part_of(u)
        for p in np.unique(parts):
            rows = np.flatnonzero(parts == p)
            hit[rows] = _member(key[rows], self._part(int(p)))
        return hit

    def tallies(self) -> tuple[np.ndarray, np.ndarray]:
        """Pairs per user index (``n_users`` long) and per movie index (``stride`` long)."""
        per_user = np.zeros(self.n_users, dtype=np.int64)
        per_item = np.zeros(self.stride, dtype=np.int64)
        step = _TALLY_KEYS
        chunks: Iterable[np.ndarray] = (
            (self.keys[lo : lo + step] for lo in range(0, len(self.keys), step))
            if self.keys is not None
            else (self._part(p) for p in range(PARTITIONS))  # one partition at a time
        )
        for keys in chunks:
            u, i = np.divmod(keys, self.stride)
            per_user += np.bincount(u, minlength=self.n_users)
            per_item += np.bincount(i, minlength=self.stride)
        return per_user, per_item

    def close(self) -> None:
        """Remove the partition files, if any."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _member(key: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(key), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, key), len(sorted_keys) - 1)
    return np.asarray(sorted_keys[pos] == key)


class _Builder:
    """Accumulates exclude keys; past ``budget`` bytes, appends them to partition files."""

    def __init__(self, stride: int, n_users: int, budget: int) -> None:
        self.set = ExcludeSet(stride=stride, n_users=n_users)
        self.budget = budget
        self.pending: list[np.ndarray] = []
        self.held = 0

    def add(self, u: np.ndarray, i: np.ndarray) -> None:
        keys = u.astype(np.int64) * self.set.stride + i
        self.pending.append(keys)
        self.held += keys.nbytes
        if self.held > self.budget:
            self._flush()

    def _flush(self) -> None:
        keys = (
            sorted_unique(np.concatenate(self.pending)) if self.pending else np.zeros(0, np.int64)
        )
        self.pending, self.held = [], 0
        if self.set.folder is None:
            if keys.nbytes <= self.budget:  # duplicates: it fits after all
                self.pending, self.held = [keys], keys.nbytes
                return
            self.set.folder = Path(tempfile.mkdtemp(prefix="batchrank-exclude-"))
        parts = self.set.part_of(keys // self.set.stride)
        bounds = np.searchsorted(parts, np.arange(PARTITIONS + 1))  # keys sorted: parts too
        for p in range(PARTITIONS):
            lo, hi = bounds[p], bounds[p + 1]
            if hi > lo:
                with (self.set.folder / f"part-{p:03d}.raw").open("ab") as fh:
                    keys[lo:hi].tofile(fh)

    def finish(self) -> ExcludeSet:
        s = self.set
        if s.folder is None:
            s.keys = sorted_unique(np.concatenate(self.pending)) if self.pending else np.zeros(0)
            s.keys = s.keys.astype(np.int64)
            s.pairs = len(s.keys)
            return s
        self._flush()
        for raw in sorted(s.folder.glob("part-*.raw")):
            keys = sorted_unique(np.fromfile(raw, dtype=np.int64))
            np.save(raw.with_suffix(".npy"), keys)
            raw.unlink()
            s.pairs += len(keys)
        return s


def load_exclude(
    paths: Sequence[str | Path],
    users: Vocabulary,
    items: Vocabulary,
    *,
    user_col: str,
    item_col: str,
    chunk_rows: int,
    budget_bytes: int,
    keep_unknown: bool,
) -> tuple[ExcludeSet, list[reader.InputFile]]:
    """Stream (user, movie) pairs from files, folders or globs into an :class:`ExcludeSet`.

    Args:
        keep_unknown: keep pairs naming an id the vocabularies lack (``--unknown oov``).

    Raises:
        DataError: a file is missing or unreadable, lacks a column, or has a null or bad id.
    """
    from batchrank.scoring.ids import map_ids

    files = discover.discover_inputs(paths)
    reader.validate_inputs(files, user_col=user_col, item_col=item_col)
    builder = _Builder(items.size, users.size, budget_bytes)
    unknown: list[pa.Array] = []
    for chunk in reader.iter_chunks(
        files, user_col=user_col, item_col=item_col, chunk_rows=chunk_rows
    ):
        mapped = map_ids(chunk, users, items, unknown="oov")
        if mapped.rejects is not None and mapped.rejects.num_rows:
            bad = mapped.rejects.slice(0, 1).to_pylist()[0]
            raise DataError.at(
                bad["file"],
                bad["row"],
                f"{bad['reason'].replace('_', ' ')} in an --exclude file "
                f"({bad['user_id']!r}, {bad['movie_id']!r}); expected ids of the model's kind",
            )
        t = mapped.table
        u = t.column(U).to_numpy()
        i = t.column(I).to_numpy()
        known = (u != 0) & (i != 0)
        builder.add(u[known], i[known])
        n_unknown = int((~known).sum())
        builder.set.unknown_pairs += n_unknown
        if keep_unknown and n_unknown:
            mask = pa.array(~known)
            unknown.append(
                pair_text(t.column(USER_ID).filter(mask), t.column(MOVIE_ID).filter(mask))
            )
    result = builder.finish()
    if unknown:
        result.unknown = pc.unique(pa.chunked_array(unknown, pa.string()).combine_chunks())
    return result, files
