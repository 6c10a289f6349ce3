"""The realistic scenarios' model: the ``seed`` preset with U users and M movies.

Training the preset on ratings of every one of 200,000 (or 10 million) users would take longer
than the benchmark, and the scorer's speed does not depend on how well the weights fit. So the
model is trained for real, for one epoch, on synthetic ratings of a base of at most
:data:`BASE_USERS` users and every movie of the catalogue (latent factors, as in
:mod:`batchrank.bench.data`), then widened to all U users: each further user's embedding row is
a trained user's row drawn at random. The architecture, the movie side and the Dense stack are
the trained ones; the vocabularies are exactly the workload's ids. Cached in the work folder by
name, so later runs reuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.bench.workload import Workload, movie_ids, user_ids
from batchrank.errors import BatchrankError
from batchrank.storage import atomic_file

__all__ = ["BASE_USERS", "ensure_workload_bundle", "workload_titles"]

BASE_USERS = 2000
"""Users the base model is trained on."""
_FACTOR_DIM = 8


def _ratings(rng: np.random.Generator, users: int, movies: int) -> pa.Table:
    """Distinct ratings covering every base user and every movie, from latent factors."""
    n = max(100_000, 3 * movies, 3 * users)
    cover_m = np.stack([rng.integers(users, size=movies), np.arange(movies)], axis=1)
    cover_u = np.stack([np.arange(users), rng.integers(movies, size=users)], axis=1)
    extra = np.stack([rng.integers(users, size=n), rng.integers(movies, size=n)], axis=1)
    cells = np.unique(np.concatenate([cover_m, cover_u, extra]) @ np.array([movies, 1]))
    u, m = cells // movies, cells % movies
    p = rng.normal(0.0, 0.6, (users, _FACTOR_DIM)) / np.sqrt(_FACTOR_DIM) * 2
    q = rng.normal(0.0, 0.6, (movies, _FACTOR_DIM)) / np.sqrt(_FACTOR_DIM) * 2
    raw = 3.5 + rng.normal(0, 0.4, users)[u] + rng.normal(0, 0.6, movies)[m]
    raw += np.einsum("ij,ij->i", p[u], q[m])
    stars = np.clip(np.rint(raw + rng.normal(0.0, 0.7, len(cells))), 1, 5)
    return pa.table(
        {
            "user_id": pa.array(user_ids(users)[u]),
            "movie_id": pa.array(movie_ids(movies)[m]),
            "rating": pa.array(stars.astype(np.float64)),
        }
    )


def workload_titles(work_dir: Path, movies: int) -> Path:
    """Write (or reuse) the titles file of an ``movies``-movie catalogue."""
    path = Path(work_dir) / f"movies-m{movies}.parquet"
    if not path.exists():
        ids = movie_ids(movies)
        titles = pa.array([f"Movie {m} ({1930 + m % 90})" for m in ids.tolist()])
        with atomic_file(path) as tmp:
            pq.write_table(pa.table({"movie_id": pa.array(ids), "title": titles}), tmp)
    return path


def ensure_workload_bundle(
    work_dir: Path, w: Workload, *, seed: int = 0, say: Callable[[str], None] = lambda _m: None
) -> Path:
    """Write (or reuse) the workload's bundle: the seed preset, ``w.users`` × ``w.movies``."""
    from batchrank.bundle import read_metadata

    work_dir = Path(work_dir)
    target = work_dir / f"model-seed-u{w.users}-m{w.movies}-seed{seed}"
    try:
        read_metadata(target)
        return target
    except BatchrankError:
        pass
    base = min(w.users, BASE_USERS)
    ratings = work_dir / f"ratings-u{base}-m{w.movies}-seed{seed}.parquet"
    if not ratings.exists():
        with atomic_file(ratings) as tmp:
            pq.write_table(_ratings(np.random.default_rng([seed, 5]), base, w.movies), tmp)
    say(
        f"training a seed-preset model on {base:,} users × {w.movies:,} movies (1 epoch), "
        f"widened to {w.users:,} users, into {target}"
    )
    from batchrank.model import RankingModel
    from batchrank.presets import preset
    from batchrank.sources import load_ratings
    from batchrank.training import fit_bundle
    from batchrank.vocab import Vocabulary

    titles = workload_titles(work_dir, w.movies)
    data = load_ratings(ratings, items=titles)
    result = fit_bundle(data, preset("seed").with_overrides(epochs=1), verbose=0)
    trained = result.bundle
    bundle = trained
    if w.users > base:
        old = trained.model
        rng = np.random.default_rng([seed, 6])
        emb = np.asarray(old.user_embedding.embeddings.value, dtype=np.float32)
        # row 0 is the OOV row; rows 1..base the trained users; the rest drawn from them
        rows = np.concatenate([np.arange(base + 1), 1 + rng.integers(base, size=w.users - base)])
        model = RankingModel(
            w.users + 1,
            old.num_items,
            embedding_dim=old.embedding_dim,
            hidden_units=old.hidden_units,
            bias_terms=old.bias_terms,
        )
        model.build_for_inference()
        model.user_embedding.embeddings.assign(emb[rows])
        for src, dst in zip(
            [old.item_embedding, *old.hidden_layers, old.output_layer],
            [model.item_embedding, *model.hidden_layers, model.output_layer],
            strict=True,
        ):
            dst.set_weights(src.get_weights())
        bundle.model = model
        bundle.users = Vocabulary(ids=pa.array(user_ids(w.users)), kind="int")
        meta = dict(bundle.metadata)
        meta["data"] = {**meta["data"], "users": w.users, "widened_from_users": base}
        bundle.metadata = meta
    bundle.save(target)
    return target
