"""The ``tfds:`` training source: MovieLens through tensorflow-datasets.

TensorFlow and tensorflow-datasets are imported here only, when a ``tfds:`` source is used, so
``batchrank --help`` and scoring never pay for them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from batchrank.errors import DataError

__all__ = ["load_tfds_ratings"]

_MOVIES_FOR = {"movielens/100k-ratings": "movielens/100k-movies"}


def _as_ids(values: np.ndarray) -> pa.Array:
    text = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    if all(t.strip().lstrip("+-").isdigit() for t in text):
        return pa.array([int(t) for t in text], pa.int64())
    return pa.array(text, pa.string())


def load_tfds_ratings(spec: str):  # type: ignore[no-untyped-def]
    """Load ``tfds:movielens/...-ratings`` (and the matching movies for titles)."""
    from batchrank.sources import ITEM, RATING, TITLE, USER, RatingsData

    name = spec.removeprefix("tfds:")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - a broken install
        raise DataError(f"{spec}: tensorflow-datasets is not importable ({e})") from e
    try:
        ds = tfds.load(name, split="train", batch_size=-1)
        data = tfds.as_numpy(ds)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{spec}: cannot load the tfds data set: {first}") from e
    for key in ("user_id", "movie_id", "user_rating"):
        if key not in data:
            raise DataError(f"{spec}: tfds data set has no `{key}` feature; found {sorted(data)}")
    ratings = pa.table(
        {
            USER: _as_ids(data["user_id"]),
            ITEM: _as_ids(data["movie_id"]),
            RATING: pa.array(np.asarray(data["user_rating"], dtype=np.float64)),
        }
    )
    items = None
    movies_name = _MOVIES_FOR.get(name)
    if movies_name is not None:
        try:
            movies = tfds.as_numpy(tfds.load(movies_name, split="train", batch_size=-1))
            titles = [
                t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in movies["movie_title"]
            ]
            items = pa.table({ITEM: _as_ids(movies["movie_id"]), TITLE: pa.array(titles)})
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"tfds:{movies_name}: cannot load titles: {first}") from e
    return RatingsData(ratings=ratings, items=items, source=spec)
