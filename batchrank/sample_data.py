"""Synthetic sample data: ratings, titles and candidate pairs, generated deterministically.

``generate`` writes the files of the repository's ``sample_data/`` folder. Everything is drawn from
one seed with numpy's ``default_rng``, and the files are written without timestamps, so two runs
with the same seed (and the same library versions) give byte-identical files.

The ratings come from a small latent-factor model (user and movie factors, user and movie biases,
noise, rounded to whole stars), so a trained model clearly beats the global mean. User and movie
ids have gaps, titles exercise CSV quoting and non-ASCII text, and the candidates hold a few exact
duplicate pairs and a few pairs with ids unknown to the ratings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.storage import atomic_file

__all__ = ["FILES", "generate"]

N_USERS = 300
N_MOVIES = 200
FACTOR_DIM = 4
CANDIDATE_DUPLICATES = 20
UNKNOWN_USER_PAIRS = 5
UNKNOWN_MOVIE_PAIRS = 5
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 9

FILES = (
    "README.md",
    "candidates.csv",
    "candidates.parquet",
    "movies.csv",
    "movies.parquet",
    "ratings.csv",
    "ratings.parquet",
)
"""The files ``generate`` writes, sorted by name."""

_ADJECTIVES = (
    "Quiet", "Silent", "Crimson", "Golden", "Last", "Lonely", "Hidden", "Broken", "Midnight",
    "Distant", "Wild", "Electric", "Forgotten", "Burning", "Frozen", "Secret", "Endless",
    "Velvet", "Little", "Northern", "Paper", "Restless", "Hollow", "Scarlet", "Iron",
)  # fmt: skip
_NOUNS = (
    "Harbour", "River", "Garden", "Machine", "Summer", "Orchard", "Station", "Kingdom", "Letter",
    "Mirror", "Highway", "Lighthouse", "Island", "Circus", "Frontier", "Carnival", "Detective",
    "Orchestra", "Winter", "Empire", "Valley", "Promise", "Stranger", "Signal", "Harvest",
)  # fmt: skip
_NAMES = ("Maria", "Jack", "Otto", "Sofia", "Nobody", "Grandma", "Eleanor", "Sam", "Father")
_PLACES = ("Lisbon", "Brooklyn", "Marseille", "Kyoto", "Dublin", "Tangier", "Oslo", "Memphis")
_PLURALS = ("Rivers", "Mirrors", "Letters", "Strangers", "Islands", "Promises", "Wolves", "Ghosts")
_SEQUELS = ("II", "III", "Part Two", "Returns")
_SPECIAL_TITLES = (
    'The "Lucky" Seven',
    'Say "Goodnight", Gracie',
    "Café Lumière",
    "Über den Wolken",
    "El Niño y la Montaña",
    "日本の夏",
    "Amélie's Bicycle",
    "Smörgåsbord, a Love Story",
    "Nobody's Fool, Again",
    "Crème Brûlée",
    "Señorita Müller",
    "東京の夜",
)
"""Titles placed on purpose, so the files always exercise quoting and non-ASCII text."""


@dataclass(frozen=True)
class _Ratings:
    """The drawn ratings in index form, before they become tables."""

    users: np.ndarray
    """User index (0 .. N_USERS - 1) of each rating."""
    movies: np.ndarray
    """Movie index (0 .. N_MOVIES - 1) of each rating."""
    stars: np.ndarray
    """Whole stars, float64 in 1 .. 5."""


def _sparse_ids(rng: np.random.Generator, n: int, *, start: int, max_gap: int) -> np.ndarray:
    """``n`` increasing int64 ids from ``start`` with random gaps of 1 .. ``max_gap``.

    Args:
        rng: the random generator.
        n: how many ids.
        start: the first id.
        max_gap: the largest step between neighbouring ids.

    Returns:
        The ids, sorted ascending, with at least one gap wider than 1.
    """
    steps = rng.integers(1, max_gap + 1, size=n - 1)
    steps[0] = max(int(steps[0]), 2)  # the ids are never dense, whatever the draw
    return start + np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)


def _draw_ratings(rng: np.random.Generator) -> _Ratings:
    """Ratings from latent factors plus user and movie biases plus noise.

    Args:
        rng: the random generator.

    Returns:
        About 15,000 ratings; every user has at least 10 and every movie at least one.
    """
    activity = np.clip(np.rint(rng.lognormal(np.log(39.5), 0.6, N_USERS)), 10, 140).astype(int)
    popularity = rng.lognormal(0.0, 0.7, N_MOVIES)
    popularity /= popularity.sum()
    rated = [np.sort(rng.choice(N_MOVIES, size=k, replace=False, p=popularity)) for k in activity]
    seen = np.zeros(N_MOVIES, dtype=bool)
    for movies in rated:
        seen[movies] = True
    for movie in np.flatnonzero(~seen):  # give every movie at least one rating
        user = int(rng.integers(N_USERS))
        rated[user] = np.sort(np.append(rated[user], movie))
    users = np.concatenate([np.full(len(m), u) for u, m in enumerate(rated)])
    movies = np.concatenate(rated)

    user_bias = rng.normal(0.0, 0.5, N_USERS)
    movie_bias = rng.normal(0.0, 0.6, N_MOVIES)
    scale = np.sqrt(0.35)
    user_factors = rng.normal(0.0, scale, (N_USERS, FACTOR_DIM))
    movie_factors = rng.normal(0.0, scale, (N_MOVIES, FACTOR_DIM))
    affinity = np.einsum("nd,nd->n", user_factors[users], movie_factors[movies])
    noise = rng.normal(0.0, 0.45, len(users))
    raw = 3.6 + user_bias[users] + movie_bias[movies] + affinity + noise
    stars = np.clip(np.rint(raw), 1.0, 5.0).astype(np.float64)
    return _Ratings(users=users, movies=movies, stars=stars)


def _one_title(rng: np.random.Generator) -> str:
    """One made-up title without its year, from a few common title shapes.

    Args:
        rng: the random generator.

    Returns:
        A title such as ``The Quiet Harbour`` or ``Maria's Orchard``.
    """

    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(len(words)))]

    shape = int(rng.integers(10))
    if shape <= 1:
        return f"The {pick(_ADJECTIVES)} {pick(_NOUNS)}"
    if shape == 2:
        return f"{pick(_ADJECTIVES)} {pick(_NOUNS)}"
    if shape == 3:
        return f"{pick(_NAMES)}'s {pick(_NOUNS)}"
    if shape == 4:
        return f"The {pick(_NOUNS)} of {pick(_PLACES)}"
    if shape == 5:
        return f"{pick(_NOUNS)} in {pick(_PLACES)}"
    if shape == 6:
        return f"Goodbye, {pick(_NAMES + _PLACES)}"
    if shape == 7:
        first, second, third = rng.choice(len(_PLURALS), size=3, replace=False)
        return f"{_PLURALS[first]}, {_PLURALS[second]} and {_PLURALS[third]}"
    if shape == 8:
        return f"The {pick(_ADJECTIVES)} {pick(_NOUNS)} {pick(_SEQUELS)}"
    return f"{pick(_NAMES)} and the {pick(_ADJECTIVES)} {pick(_NOUNS)}"


def _draw_titles(rng: np.random.Generator) -> list[str]:
    """``N_MOVIES`` distinct titles with years, the special titles placed at random.

    Args:
        rng: the random generator.

    Returns:
        Titles such as ``The Quiet Harbour (1994)``.
    """
    names: list[str] = []
    taken = set(_SPECIAL_TITLES)
    while len(names) < N_MOVIES - len(_SPECIAL_TITLES):
        name = _one_title(rng)
        if name not in taken:
            taken.add(name)
            names.append(name)
    slots = np.sort(rng.choice(N_MOVIES, size=len(_SPECIAL_TITLES), replace=False))
    for slot, special in zip(slots, _SPECIAL_TITLES, strict=True):
        names.insert(int(slot), special)
    years = rng.integers(1950, 2024, size=N_MOVIES)
    return [f"{name} ({year})" for name, year in zip(names, years, strict=True)]


def _absent_ids(rng: np.random.Generator, ids: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct ids inside the range of ``ids`` that are not in ``ids``.

    Args:
        rng: the random generator.
        ids: the known ids, sorted ascending.
        n: how many unknown ids.

    Returns:
        The unknown ids, int64.
    """
    gaps = np.setdiff1d(np.arange(ids[0], ids[-1] + 1, dtype=np.int64), ids)
    return np.sort(rng.choice(gaps, size=n, replace=False)).astype(np.int64)


def _draw_candidates(
    rng: np.random.Generator,
    ratings: _Ratings,
    user_ids: np.ndarray,
    movie_ids: np.ndarray,
) -> pa.Table:
    """About 60 candidate movies per user, rated and unrated, plus duplicates and unknown ids.

    Args:
        rng: the random generator.
        ratings: the drawn ratings.
        user_ids: the raw id of each user index.
        movie_ids: the raw id of each movie index.

    Returns:
        A ``user_id``, ``movie_id`` table in shuffled order.
    """
    users: list[np.ndarray] = []
    movies: list[np.ndarray] = []
    for u in range(N_USERS):
        rated = ratings.movies[ratings.users == u]
        unrated = np.setdiff1d(np.arange(N_MOVIES), rated)
        k = int(rng.integers(50, 71))
        n_rated = min(round(k * 0.3), len(rated))
        n_unrated = min(k - n_rated, len(unrated))
        picked = np.concatenate(
            [
                rng.choice(rated, size=n_rated, replace=False),
                rng.choice(unrated, size=n_unrated, replace=False),
            ]
        )
        users.append(np.full(len(picked), user_ids[u], dtype=np.int64))
        movies.append(movie_ids[picked])
    base_users, base_movies = np.concatenate(users), np.concatenate(movies)

    dup = rng.choice(len(base_users), size=CANDIDATE_DUPLICATES, replace=False)
    unknown_users = _absent_ids(rng, user_ids, UNKNOWN_USER_PAIRS)
    unknown_movies = _absent_ids(rng, movie_ids, UNKNOWN_MOVIE_PAIRS)
    all_users = np.concatenate(
        [
            base_users,
            base_users[dup],
            unknown_users,
            rng.choice(user_ids, size=UNKNOWN_MOVIE_PAIRS, replace=False),
        ]
    )
    all_movies = np.concatenate(
        [
            base_movies,
            base_movies[dup],
            rng.choice(movie_ids, size=UNKNOWN_USER_PAIRS, replace=False),
            unknown_movies,
        ]
    )
    order = rng.permutation(len(all_users))
    return pa.table(
        {
            "user_id": pa.array(all_users[order], pa.int64()),
            "movie_id": pa.array(all_movies[order], pa.int64()),
        }
    )


def _write_parquet(table: pa.Table, target: Path) -> None:
    """Write a table as zstd Parquet, atomically, with nothing time-dependent in it.

    Args:
        table: the table.
        target: the file to write.
    """
    with atomic_file(target) as tmp:
        pq.write_table(
            table,
            tmp,
            compression=PARQUET_COMPRESSION,
            compression_level=PARQUET_COMPRESSION_LEVEL,
        )


def _write_csv(table: pa.Table, target: Path) -> None:
    """Write a table as CSV (header, ``\\n`` line ends, quotes where needed), atomically.

    Args:
        table: the table.
        target: the file to write.
    """
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    with atomic_file(target) as tmp:
        frame.write_csv(tmp)


def _write_text(text: str, target: Path) -> None:
    """Write UTF-8 text with ``\\n`` line ends, atomically.

    Args:
        text: the content.
        target: the file to write.
    """
    with atomic_file(target) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def _readme(counts: dict[str, int], seed: int) -> str:
    """The folder's README.md.

    Args:
        counts: what ``generate`` counted.
        seed: the seed the files were drawn with.

    Returns:
        Markdown text.
    """
    seed_flag = "" if seed == 7 else f" --seed {seed}"
    return f"""# Sample data (synthetic)

Every file in this folder is **synthetic**: made up by `batchrank/sample_data.py` from a fixed
seed ({seed}). No real users, ratings or films are described. Regenerate it, byte for byte, with:

```
batchrank sample-data --out sample_data{seed_flag}
```

Each table is written twice, as Parquet (zstd) and as CSV (UTF-8, header row, quotes where
needed); both forms hold the same rows in the same order.

| file | columns | rows |
|---|---|---|
| `ratings.*` | `user_id` int64, `movie_id` int64, `rating` float64 | {counts["ratings"]} |
| `movies.*` | `movie_id` int64, `title` string | {counts["movies"]} |
| `candidates.*` | `user_id` int64, `movie_id` int64 | {counts["candidates"]} |

- **ratings**: {counts["users"]} users rate {counts["movies"]} movies in whole stars 1-5.
  A rating is a latent-factor score ({FACTOR_DIM} factors) plus a user bias, a movie bias and
  noise, rounded and clipped to 1-5, so a trained model beats the global mean clearly. Ids are
  not dense: user ids start at 1000 and movie ids skip numbers, to show that vocabularies
  handle gaps.
- **movies**: a title for every movie in the ratings, such as `The Quiet Harbour (1994)`. Some
  titles hold commas, double quotes, apostrophes and non-ASCII letters (é, ü, ñ, 日本) to
  exercise CSV quoting and UTF-8 handling.
- **candidates**: the user-movie pairs to score, about 60 per user, a mix of rated and unrated
  movies, in shuffled order. Of these, {counts["candidate_duplicates"]} pairs appear twice
  (exact duplicates) and {counts["candidate_unknown"]} pairs name a user or a movie that is
  not in the ratings, so `batchrank score --unknown skip` (the default) has something to skip
  and count.

Train on it, then score the candidates (`make demo` does both through `jobs/sample.toml`):

```
batchrank train --ratings sample_data/ratings.parquet --items sample_data/movies.parquet \\
    --out model
batchrank score --model model --pairs sample_data/candidates.parquet \\
    --items sample_data/movies.parquet --out top10.parquet
```
"""


def generate(out: Path, *, seed: int = 7) -> dict[str, int]:
    """Write the synthetic sample data into ``out``.

    Each file is written atomically (a temporary name beside it, then a rename). The same seed
    gives byte-identical files.

    Args:
        out: the folder to write into; created if missing.
        seed: the seed of every random draw.

    Returns:
        Counts: ``users``, ``movies``, ``ratings``, ``candidates``, ``candidate_duplicates``,
        ``candidate_unknown`` and ``bytes`` (the total size of the files written).
    """
    out = Path(out)
    ids_rng, ratings_rng, titles_rng, candidates_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    user_ids = _sparse_ids(ids_rng, N_USERS, start=1000, max_gap=4)
    movie_ids = _sparse_ids(ids_rng, N_MOVIES, start=1, max_gap=6)
    drawn = _draw_ratings(ratings_rng)
    ratings = pa.table(
        {
            "user_id": pa.array(user_ids[drawn.users], pa.int64()),
            "movie_id": pa.array(movie_ids[drawn.movies], pa.int64()),
            "rating": pa.array(drawn.stars, pa.float64()),
        }
    )
    movies = pa.table(
        {
            "movie_id": pa.array(movie_ids, pa.int64()),
            "title": pa.array(_draw_titles(titles_rng), pa.string()),
        }
    )
    candidates = _draw_candidates(candidates_rng, drawn, user_ids, movie_ids)
    counts = {
        "users": N_USERS,
        "movies": N_MOVIES,
        "ratings": ratings.num_rows,
        "candidates": candidates.num_rows,
        "candidate_duplicates": CANDIDATE_DUPLICATES,
        "candidate_unknown": UNKNOWN_USER_PAIRS + UNKNOWN_MOVIE_PAIRS,
    }
    for name, table in (("ratings", ratings), ("movies", movies), ("candidates", candidates)):
        _write_parquet(table, out / f"{name}.parquet")
        _write_csv(table, out / f"{name}.csv")
    _write_text(_readme(counts, seed), out / "README.md")
    counts["bytes"] = sum((out / name).stat().st_size for name in FILES)
    return counts
