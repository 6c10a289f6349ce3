"""Business rules, applied to scored rows before top-k: what a list may never contain.

- ``--exclude PATH`` (repeatable; files, folders, globs): (user, movie) pairs never to recommend,
  typically the ratings the model was trained on. The pairs are read once, streamed chunk by
  chunk, and held as a sorted array of ``u * items.size + i`` (int64, vocabulary indices); past
  the memory budget they are partitioned by user range into files on disk
  (:class:`ExcludeSet`), of which a chunk loads only those its users fall in.
- ``--deny-items PATH`` / ``--allow-items PATH``: movies never / the only movies to recommend.
- ``--min-stars X``: candidates predicted below ``X`` stars (or not a number) are dropped.

:func:`apply_rules` filters a scored chunk; each removed row is counted under the first rule
that removes it, in the order above (:data:`RULE_COUNT_KEYS`). Rules are a pure function of
each row, so the output does not depend on chunk size or engine. With ``--unknown oov``, rows
scored with the OOV row are matched on their raw ids (pairs and movies unknown to the model
are kept for that, in memory; otherwise they cannot occur and are only counted).
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
from batchrank.scoring.schema import MOVIE_ID, STARS, USER_ID, I, U

if TYPE_CHECKING:
    from batchrank.bundle import Bundle
    from batchrank.scoring.spec import ScoreSpec
    from batchrank.vocab import Vocabulary

__all__ = [
    "RULE_COUNT_KEYS",
    "ExcludeSet",
    "Rules",
    "apply_rules",
    "load_exclude",
    "load_rules",
    "rule_counts",
    "rule_inputs",
]

RULE_COUNT_KEYS = ("excluded_pairs", "denied_items", "not_allowed_items", "below_min_stars")
"""Count keys of rows removed by a rule, one per rule, in the order rules apply."""

PARTITIONS = 256
"""User-range partitions of an exclude set past its memory budget."""
_CACHED_PARTS = 4


def _pair_text(users: pa.Array, items: pa.Array) -> pa.Array:
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
        unknown: text keys (:func:`_pair_text`) of pairs with an id the model lacks, kept only
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
        chunks: Iterable[np.ndarray] = (
            [self.keys]
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
        keys = np.unique(np.concatenate(self.pending)) if self.pending else np.zeros(0, np.int64)
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
            s.keys = np.unique(np.concatenate(self.pending)) if self.pending else np.zeros(0)
            s.keys = s.keys.astype(np.int64)
            s.pairs = len(s.keys)
            return s
        self._flush()
        for raw in sorted(s.folder.glob("part-*.raw")):
            keys = np.unique(np.fromfile(raw, dtype=np.int64))
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
                _pair_text(t.column(USER_ID).filter(mask), t.column(MOVIE_ID).filter(mask))
            )
    result = builder.finish()
    if unknown:
        result.unknown = pc.unique(pa.chunked_array(unknown, pa.string()).combine_chunks())
    return result, files


def _load_items(path: Path, spec: ScoreSpec, bundle: Bundle) -> tuple[np.ndarray, pa.Array, int]:
    """A deny/allow list: a mask over item indices, its unknown ids, how many ids it held."""
    from batchrank.scoring.cross import read_user_subset

    ids = read_user_subset(path, spec.item_column, kind=bundle.items.kind, noun="movie")
    idx = bundle.items.lookup(ids)
    mask = np.zeros(bundle.items.size, dtype=bool)
    mask[idx[idx != 0]] = True
    unknown = ids.filter(pa.array(idx == 0))
    return mask, unknown, len(ids)


@dataclass
class Rules:
    """The rules of one run, loaded before any scoring (:func:`load_rules`)."""

    exclude: ExcludeSet | None = None
    deny: np.ndarray | None = None
    """Per item index: True for a denied movie (None: no deny list)."""
    deny_unknown: pa.Array | None = None
    allow: np.ndarray | None = None
    """Per item index: True for an allowed movie (None: no allow list, all allowed)."""
    allow_unknown: pa.Array | None = None
    min_stars: float | None = None
    files: tuple[reader.InputFile, ...] = ()
    """Every file the rules were read from (their identity enters the fragment keys)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """What was loaded, for the manifest."""

    def close(self) -> None:
        """Remove the exclude set's partition files, if any."""
        if self.exclude is not None:
            self.exclude.close()


def load_rules(spec: ScoreSpec, bundle: Bundle) -> Rules | None:
    """Read the spec's rules against the bundle's vocabularies; None when it sets none.

    Raises:
        DataError: a rule file is missing, unreadable, lacks its id columns or holds bad ids.
    """
    if not (spec.exclude or spec.deny_items or spec.allow_items or spec.min_stars is not None):
        return None
    rules = Rules(min_stars=spec.min_stars)
    files: list[reader.InputFile] = []
    summary: dict[str, Any] = {"min_stars": spec.min_stars}
    if spec.exclude:
        rules.exclude, ex_files = load_exclude(
            spec.exclude,
            bundle.users,
            bundle.items,
            user_col=spec.user_column,
            item_col=spec.item_column,
            chunk_rows=spec.chunk_rows,
            budget_bytes=int(spec.memory_budget_mb * (1 << 20)),
            keep_unknown=spec.unknown == "oov",
        )
        files += ex_files
        summary["exclude"] = {
            "files": [str(f.path) for f in ex_files],
            "pairs": rules.exclude.pairs,
            "pairs_unknown_to_model": rules.exclude.unknown_pairs,
            "spilled": rules.exclude.folder is not None,
        }
    for name, path in (("deny", spec.deny_items), ("allow", spec.allow_items)):
        if path is None:
            continue
        mask, unknown, n = _load_items(path, spec, bundle)
        setattr(rules, name, mask)
        if spec.unknown == "oov" and len(unknown):
            setattr(rules, f"{name}_unknown", unknown)
        files += discover.discover_inputs([path])
        summary[f"{name}_items"] = {
            "file": str(path),
            "movies": n,
            "movies_unknown_to_model": len(unknown),
        }
    rules.files = tuple(files)
    rules.summary = summary
    return rules


def _isin(values: pa.Array, value_set: pa.Array | None) -> np.ndarray:
    if value_set is None or len(value_set) == 0:
        return np.zeros(len(values), dtype=bool)
    return np.asarray(pc.is_in(values, value_set=value_set).to_numpy(zero_copy_only=False))


def apply_rules(
    scored: pa.Table, mapped: pa.Table, rules: Rules | None
) -> tuple[pa.Table, dict[str, int]]:
    """Drop the scored rows a rule forbids; return the rest and the rows each rule removed.

    Args:
        scored: ``user_id, movie_id, score, stars``, row for row the mapped chunk's.
        mapped: the mapped chunk (its ``u`` and ``i`` indices).
        rules: the run's rules (None: the table is returned as it is, with no counts).
    """
    if rules is None:
        return scored, {}
    u = np.asarray(mapped.column(U).to_numpy(), dtype=np.int64)
    i = np.asarray(mapped.column(I).to_numpy(), dtype=np.int64)
    oov_u, oov_i = u == 0, i == 0
    gone = np.zeros(scored.num_rows, dtype=bool)
    counts = dict.fromkeys(RULE_COUNT_KEYS, 0)

    def drop(key: str, hit: np.ndarray) -> None:
        new = hit & ~gone
        counts[key] = int(new.sum())
        gone[new] = True

    movies = scored.column(MOVIE_ID)
    if rules.exclude is not None:
        hit = rules.exclude.contains(u, i) & ~oov_u & ~oov_i
        oov = oov_u | oov_i
        if rules.exclude.unknown is not None and oov.any():
            rows = np.flatnonzero(oov)
            take = pa.array(rows)
            keys = _pair_text(scored.column(USER_ID).take(take), movies.take(take))
            hit[rows] = _isin(keys, rules.exclude.unknown)
        drop("excluded_pairs", hit)
    if rules.deny is not None:
        hit = rules.deny[i]
        if rules.deny_unknown is not None and oov_i.any():
            hit[oov_i] = _isin(movies.filter(pa.array(oov_i)), rules.deny_unknown)
        drop("denied_items", hit)
    if rules.allow is not None:
        ok = rules.allow[i].copy()
        if oov_i.any():
            ok[oov_i] = _isin(movies.filter(pa.array(oov_i)), rules.allow_unknown)
        drop("not_allowed_items", ~ok)
    if rules.min_stars is not None:
        stars = np.asarray(scored.column(STARS).to_numpy(zero_copy_only=False))
        with np.errstate(invalid="ignore"):
            drop("below_min_stars", ~(stars >= np.float32(rules.min_stars)))
    if gone.any():
        scored = scored.filter(pa.array(~gone))
    return scored, counts


def rule_counts(counts: Sequence[tuple[str, int]] | dict[str, int]) -> dict[str, int]:
    """The rule counts of a run's counts, every key present."""
    c = dict(counts)
    return {k: int(c.get(k, 0)) for k in RULE_COUNT_KEYS}


def rule_inputs(spec: ScoreSpec) -> list[tuple[str, Path | str | None]]:
    """The rules' input files as (flag, path), for the no-output-is-an-input guard."""
    return [
        *(("--exclude", p) for p in spec.exclude),
        ("--deny-items", spec.deny_items),
        ("--allow-items", spec.allow_items),
    ]
