"""Synthetic inputs of the benchmark: an ML-100K-sized catalogue, ratings and candidate pairs.

Every file is drawn from one seed with numpy's ``default_rng`` and written atomically under a
name that encodes what defines it (``pairs-n5000000-seed0.parquet``), so a later run with the
same work folder reuses it instead of drawing it again.

Pairs are drawn without repetition per user: the file is a sequence of *passes*, each a
shuffled full cross join of the catalogue (943 × 1,682 = 1,586,126 pairs), the last one cut
short. Up to one full cross join no pair repeats; beyond it a pair repeats once per pass, as
when several candidate generators propose the same movie.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.storage import atomic_file

__all__ = [
    "N_MOVIES",
    "N_USERS",
    "Catalogue",
    "ensure_catalogue",
    "ensure_pairs",
    "iter_pair_blocks",
    "pairs_path",
    "write_pair_blocks",
]

N_USERS = 943
"""Users of MovieLens 100K."""
N_MOVIES = 1682
"""Movies of MovieLens 100K."""
DEFAULT_RATINGS = 100_000
"""Synthetic ratings to train the benchmark's model on."""
ROW_GROUP_ROWS = 1 << 20
"""Rows per Parquet row group of the pairs file."""
_FACTOR_DIM = 8


@dataclass(frozen=True)
class Catalogue:
    """The synthetic ratings and titles files of the benchmark."""

    ratings: Path
    """``user_id, movie_id, rating`` (int64, int64, float64)."""
    movies: Path
    """``movie_id, title``."""


def pairs_path(work_dir: Path, n: int, seed: int) -> Path:
    """Where the pairs file of ``n`` pairs drawn with ``seed`` lives in ``work_dir``."""
    return Path(work_dir) / f"pairs-n{n}-seed{seed}.parquet"


def _user_ids() -> np.ndarray:
    return np.arange(1, N_USERS + 1, dtype=np.int64)


def _movie_ids() -> np.ndarray:
    return np.arange(1, N_MOVIES + 1, dtype=np.int64)


def _draw_ratings(rng: np.random.Generator, n: int) -> pa.Table:
    """``n`` distinct (user, movie) ratings from latent factors; every id appears at least once.

    Args:
        rng: the random generator.
        n: ratings wanted (capped at the cross join's size).

    Returns:
        The ratings table, sorted by user then movie.
    """
    n = min(n, N_USERS * N_MOVIES)
    cells = rng.choice(N_USERS * N_MOVIES, size=n, replace=False)
    # Make sure every user and every movie is in the vocabularies: one cell each.
    cover_movies = rng.integers(N_USERS, size=N_MOVIES) * N_MOVIES + np.arange(N_MOVIES)
    cover_users = np.arange(N_USERS) * N_MOVIES + rng.integers(N_MOVIES, size=N_USERS)
    cells = np.unique(np.concatenate([cover_movies, cover_users, cells]))
    if len(cells) > n:
        keep = np.zeros(len(cells), dtype=bool)
        keep[np.searchsorted(cells, np.concatenate([cover_movies, cover_users]))] = True
        extra = np.flatnonzero(~keep)
        keep[rng.choice(extra, size=max(0, n - int(keep.sum())), replace=False)] = True
        cells = cells[keep]
    users, movies = cells // N_MOVIES, cells % N_MOVIES
    scale = np.sqrt(0.4)
    p = rng.normal(0.0, scale, (N_USERS, _FACTOR_DIM)) / np.sqrt(_FACTOR_DIM) * 2
    q = rng.normal(0.0, scale, (N_MOVIES, _FACTOR_DIM)) / np.sqrt(_FACTOR_DIM) * 2
    bu = rng.normal(0.0, 0.4, N_USERS)
    bm = rng.normal(0.0, 0.6, N_MOVIES)
    raw = 3.5 + bu[users] + bm[movies] + np.einsum("ij,ij->i", p[users], q[movies])
    stars = np.clip(np.rint(raw + rng.normal(0.0, 0.7, len(cells))), 1, 5)
    return pa.table(
        {
            "user_id": pa.array(_user_ids()[users]),
            "movie_id": pa.array(_movie_ids()[movies]),
            "rating": pa.array(stars.astype(np.float64)),
        }
    )


def _titles() -> pa.Table:
    ids = _movie_ids()
    return pa.table(
        {
            "movie_id": pa.array(ids),
            "title": pa.array([f"Movie {m} ({1930 + m % 90})" for m in ids.tolist()]),
        }
    )


def ensure_catalogue(work_dir: Path, *, seed: int = 0, ratings: int = DEFAULT_RATINGS) -> Catalogue:
    """Write (or reuse) the synthetic ratings and titles files in ``work_dir``.

    Args:
        work_dir: the benchmark's work folder.
        seed: seed of the draw.
        ratings: number of ratings.

    Returns:
        The paths of the two files.
    """
    work_dir = Path(work_dir)
    cat = Catalogue(
        ratings=work_dir / f"ratings-n{ratings}-seed{seed}.parquet",
        movies=work_dir / "movies.parquet",
    )
    if not cat.ratings.exists():
        table = _draw_ratings(np.random.default_rng([seed, 1]), ratings)
        with atomic_file(cat.ratings) as tmp:
            pq.write_table(table, tmp)
    if not cat.movies.exists():
        with atomic_file(cat.movies) as tmp:
            pq.write_table(_titles(), tmp)
    return cat


def iter_pair_blocks(n: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the pairs file's content as ``(user_id, movie_id)`` int64 array blocks.

    Each block is (part of) one pass: a shuffled full cross join of the catalogue. The blocks
    together hold exactly ``n`` pairs.

    Args:
        n: total pairs.
        seed: seed of the draw.
    """
    rng = np.random.default_rng([seed, 2])
    cross = N_USERS * N_MOVIES
    users, movies = _user_ids(), _movie_ids()
    left = int(n)
    while left > 0:
        take = min(left, cross)
        cells = rng.permutation(cross)[:take]
        for s in range(0, take, ROW_GROUP_ROWS):
            block = cells[s : s + ROW_GROUP_ROWS]
            yield users[block // N_MOVIES], movies[block % N_MOVIES]
        left -= take


def ensure_pairs(work_dir: Path, n: int, *, seed: int = 0) -> Path:
    """Write (or reuse) the pairs file of ``n`` pairs in ``work_dir``.

    Args:
        work_dir: the benchmark's work folder.
        n: number of pairs (at least 1).
        seed: seed of the draw.

    Returns:
        The path of the Parquet file (columns ``user_id``, ``movie_id``, int64).
    """
    if n < 1:
        raise ValueError(f"pairs must be >= 1; received {n}")
    path = pairs_path(work_dir, n, seed)
    if path.exists():
        return path
    write_pair_blocks(path, iter_pair_blocks(n, seed))
    return path


def write_pair_blocks(path: Path, blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``(user_id, movie_id)`` int64 blocks atomically as Parquet, in row groups of at
    most :data:`ROW_GROUP_ROWS`."""
    schema = pa.schema([("user_id", pa.int64()), ("movie_id", pa.int64())])
    with atomic_file(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for u, m in blocks:
            for s in range(0, len(u), ROW_GROUP_ROWS):
                end = s + ROW_GROUP_ROWS
                block = pa.table({"user_id": u[s:end], "movie_id": m[s:end]}, schema=schema)
                writer.write_table(block, row_group_size=ROW_GROUP_ROWS)
