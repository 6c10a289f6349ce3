"""The benchmark's scenarios: which pairs file, and which catalogue the model knows.

``grouped`` (the default) is the input a retrieval stage hands the ranker: U users × C
distinct candidates each from a catalogue of M movies, no (user, movie) cell repeated, rows
grouped by user, each user's candidates in random order. ``shuffled`` is the same pairs in
random row order. The model is the ``seed`` preset with exactly those U users and M movies
(:mod:`batchrank.bench.bundle`). Users scale with ``--pairs``: ``U = ceil(pairs / C)``, the
last user cut short.

``repeated`` is the earlier benchmark's input, kept for comparison: an ML-100K-sized catalogue
(943 × 1,682 cells) whose passes repeat every cell once per 1.6 M pairs (:mod:`.data`), and
``all`` is ``batchrank score --pairs all`` on that catalogue (the cross join, once).

Ids are not contiguous (``user_id = 100_000 + 3 × k``, ``movie_id = 10 + 2 × k``), as exported
ids rarely are; they still lie in a bounded range.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from batchrank.bench import DEFAULT_CANDIDATES, DEFAULT_MOVIES
from batchrank.bench.data import N_MOVIES, N_USERS, write_pair_blocks

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_MOVIES",
    "SCENARIOS",
    "Scenario",
    "Workload",
    "draw_candidates",
    "ensure_workload_pairs",
    "movie_ids",
    "user_ids",
    "workload",
]

Scenario = Literal["grouped", "shuffled", "repeated", "all"]
SCENARIOS: tuple[str, ...] = ("grouped", "shuffled", "repeated", "all")
"""Scenario names, the default first."""
_USERS_PER_BLOCK = 1 << 14


@dataclass(frozen=True)
class Workload:
    """The shape of one scenario's input."""

    scenario: str
    pairs: int
    users: int
    movies: int
    candidates: int
    """Candidates per user (0 for the small-catalogue scenarios)."""

    @property
    def realistic(self) -> bool:
        """True for ``grouped`` and ``shuffled`` (a catalogue of their own, no repeats)."""
        return self.scenario in ("grouped", "shuffled")

    @property
    def distinct_pairs(self) -> int:
        """Distinct (user, movie) cells in the input."""
        if self.realistic or self.scenario == "all":
            return self.pairs
        return min(self.pairs, N_USERS * N_MOVIES)

    def describe(self) -> str:
        """One line: the scenario and its shape."""
        if self.realistic:
            order = "grouped by user" if self.scenario == "grouped" else "rows shuffled"
            return (
                f"{self.scenario}: {self.pairs:,} pairs, {self.users:,} users × "
                f"{self.candidates:,} distinct candidates from {self.movies:,} movies, {order}"
            )
        if self.scenario == "all":
            return f"all: --pairs all, {self.users:,} users × {self.movies:,} movies"
        return (
            f"repeated: {self.pairs:,} pairs over {self.users:,} users × {self.movies:,} movies "
            f"({self.distinct_pairs:,} distinct)"
        )


def workload(
    scenario: str,
    pairs: int,
    *,
    candidates: int = DEFAULT_CANDIDATES,
    movies: int = DEFAULT_MOVIES,
) -> Workload:
    """The workload of ``scenario`` at ``pairs`` pairs (``all``: the cross join, any pairs)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if scenario == "all":
        return Workload("all", N_USERS * N_MOVIES, N_USERS, N_MOVIES, N_MOVIES)
    if scenario == "repeated":
        return Workload("repeated", pairs, N_USERS, N_MOVIES, 0)
    if not 1 <= candidates <= movies:
        raise ValueError(f"candidates must be in [1, movies={movies}]; received {candidates}")
    return Workload(scenario, pairs, math.ceil(pairs / candidates), movies, candidates)


def user_ids(n: int) -> np.ndarray:
    """The realistic scenarios' user ids (int64, ascending, not contiguous)."""
    return 100_000 + 3 * np.arange(n, dtype=np.int64)


def movie_ids(n: int) -> np.ndarray:
    """The realistic scenarios' movie ids (int64, ascending, not contiguous)."""
    return 10 + 2 * np.arange(n, dtype=np.int64)


def _distinct_rows(rng: np.random.Generator, rows: int, c: int, m: int) -> np.ndarray:
    """``rows × c`` movie indices in ``[0, m)``, distinct within each row, in random order."""
    out = np.sort(rng.integers(0, m, size=(rows, c)), axis=1)
    while True:
        dup = (out[:, 1:] == out[:, :-1]).any(axis=1) if c > 1 else np.zeros(rows, dtype=bool)
        bad = np.flatnonzero(dup)
        if len(bad) == 0:
            break
        if c * 4 > m:  # dense rows: a permutation prefix per row is cheaper than redrawing
            out[bad] = np.sort(rng.random((len(bad), m)).argsort(axis=1)[:, :c], axis=1)
        else:
            out[bad] = np.sort(rng.integers(0, m, size=(len(bad), c)), axis=1)
    return rng.permuted(out, axis=1)


def draw_candidates(w: Workload, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(user_id, movie_id)`` blocks of a realistic workload, grouped by user, in user order.

    Each user gets ``w.candidates`` distinct movies (the last user fewer, so the blocks hold
    exactly ``w.pairs`` pairs).
    """
    rng = np.random.default_rng([seed, 3, w.movies, w.candidates])
    uids, mids = user_ids(w.users), movie_ids(w.movies)
    c, left = w.candidates, w.pairs
    for lo in range(0, w.users, _USERS_PER_BLOCK):
        n = min(_USERS_PER_BLOCK, w.users - lo)
        cells = _distinct_rows(rng, n, c, w.movies)
        users = np.repeat(uids[lo : lo + n], c)
        take = min(left, n * c)
        left -= take
        yield users[:take], mids[cells.reshape(-1)[:take]]


def _path(work_dir: Path, w: Workload, seed: int) -> Path:
    return Path(work_dir) / (
        f"pairs-{w.scenario}-n{w.pairs}-c{w.candidates}-m{w.movies}-seed{seed}.parquet"
    )


def ensure_workload_pairs(work_dir: Path, w: Workload, *, seed: int = 0) -> Path:
    """Write (or reuse) the pairs file of a realistic workload.

    ``grouped`` is written block by block; ``shuffled`` holds every pair in memory once to
    permute the rows (16 bytes a pair in the benchmark's own process, not in a measured one).
    """
    if not w.realistic:
        raise ValueError(f"{w.scenario} pairs come from batchrank.bench.data")
    path = _path(work_dir, w, seed)
    if path.exists():
        return path
    if w.scenario == "grouped":
        write_pair_blocks(path, draw_candidates(w, seed))
        return path
    blocks = list(draw_candidates(w, seed))
    u = np.concatenate([b[0] for b in blocks])
    m = np.concatenate([b[1] for b in blocks])
    del blocks
    perm = np.random.default_rng([seed, 4]).permutation(len(u))
    write_pair_blocks(path, [(u[perm], m[perm])])
    return path
