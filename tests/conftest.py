"""Shared fixtures: small synthetic ratings made in tmp folders, and the bundles trained once.

Everything here is real: the data are written to Parquet / CSV and read back through the
sources, and the bundle is trained by :func:`batchrank.training.train` and written to disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from tests.redis_server import redis_server  # noqa: F401 (the fixture: a real redis-server)

# ../shared/data/ml-100k beside the checkout; a user's fresh clone has no ../shared.
ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
requires_ml100k = pytest.mark.skipif(
    not (ML100K / "u.data").is_file(), reason=f"MovieLens 100K not found at {ML100K}"
)
"""Skip when ML-100K is absent. Every test marked ``realdata`` gets it (see the hook below);
test modules cannot ``from conftest import`` it, as tests/scoring/ has a conftest too."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``realdata`` tests need ../shared/data/ml-100k: skip them, not fail, when it is absent."""
    for item in items:
        if item.get_closest_marker("realdata") is not None:
            item.add_marker(requires_ml100k)


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """The MovieLens 100K folder (the test is skipped when it is absent)."""
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K}")
    return ML100K


# Titles that trip naive CSV writers and readers: commas, quotes, pipes, accents, emoji.
TRICKY_TITLES = [
    "Monsters, Inc. (2001)",
    'The "Best" Movie (1999)',
    "Amélie (2001)",
    "a|pipe|title",
    "  leading and trailing spaces  ",
    "Ünïcödé ☃ 🎬",
    "Semi;colon\ttab",
]

N_USERS, N_MOVIES, N_RATINGS = 60, 40, 1500
USER_IDS = np.arange(1, N_USERS + 1) * 10  # 10, 20, ..., 600: gaps, no 1
MOVIE_IDS = 1000 + np.arange(N_MOVIES) * 7  # 1000, 1007, ...: gaps, far from 1


@dataclass(frozen=True)
class TinyData:
    """Paths and content of the tiny synthetic data set."""

    ratings: Path
    """Parquet with ``user_id``, ``movie_id`` (int64) and ``rating`` (1..5)."""
    items: Path
    """CSV with ``movie_id`` and ``title`` (tricky titles included; one movie without a title)."""
    frame: pl.DataFrame
    """The ratings as written."""
    titles: dict[int, str]
    """The titles as written."""


def make_ratings(seed: int = 0) -> pl.DataFrame:
    """~1500 distinct (user, movie) ratings on 1..5 from rank-3 latent factors plus noise."""
    rng = np.random.default_rng(seed)
    user_f = rng.normal(size=(N_USERS, 3))
    movie_f = rng.normal(size=(N_MOVIES, 3))
    user_bias = rng.normal(scale=0.5, size=N_USERS)
    movie_bias = rng.normal(scale=0.7, size=N_MOVIES)
    cells = rng.choice(N_USERS * N_MOVIES, size=N_RATINGS, replace=False)
    u, m = cells // N_MOVIES, cells % N_MOVIES
    score = 3.2 + user_bias[u] + movie_bias[m] + 0.6 * (user_f[u] * movie_f[m]).sum(axis=1)
    score += rng.normal(scale=0.3, size=N_RATINGS)
    rating = np.clip(np.round(score), 1, 5).astype(np.int64)
    return pl.DataFrame(
        {"user_id": USER_IDS[u], "movie_id": MOVIE_IDS[m], "rating": rating},
        schema={"user_id": pl.Int64, "movie_id": pl.Int64, "rating": pl.Int64},
    )


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy generator."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_ratings(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    """The tiny ratings as Parquet, and an items CSV with tricky titles (written once)."""
    folder = tmp_path_factory.mktemp("tiny")
    frame = make_ratings()
    ratings = folder / "ratings.parquet"
    frame.write_parquet(ratings)
    # Every movie but the last has a title; one extra title names a movie nobody rated.
    titles = {
        int(mid): (TRICKY_TITLES[k] if k < len(TRICKY_TITLES) else f"Movie {mid} ({1950 + k})")
        for k, mid in enumerate(MOVIE_IDS[:-1])
    }
    titles[99999] = "Never Rated (2020)"
    items = folder / "items.csv"
    pl.DataFrame({"movie_id": list(titles), "title": list(titles.values())}).write_csv(items)
    return TinyData(ratings=ratings, items=items, frame=frame, titles=titles)


SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
"""The committed sample data (sample_data/)."""

BundleFactory = Callable[[str], Path]


@pytest.fixture(scope="session")
def trained_bundle(
    tmp_path_factory: pytest.TempPathFactory, tiny_ratings: TinyData
) -> BundleFactory:
    """The one bundle fixture: ``trained_bundle(data)`` is a seed-preset bundle (2 epochs,
    titles included) trained on ``"tiny"`` (:func:`tiny_ratings`) or ``"sample"``
    (sample_data/), each at most once per session. Do not modify it: copy it first
    (``shutil.copytree``)."""
    from batchrank.training import train

    recipes = {
        "tiny": (tiny_ratings.ratings, tiny_ratings.items),
        "sample": (SAMPLE / "ratings.parquet", SAMPLE / "movies.parquet"),
    }
    made: dict[str, Path] = {}

    def get(data: str) -> Path:
        if data not in made:
            ratings, items = recipes[data]
            out = tmp_path_factory.mktemp(f"bundle-{data}") / "model"
            train(ratings, out, preset="seed", items=items, epochs=2, verbose=0)
            made[data] = out
        return made[data]

    return get


@pytest.fixture(scope="session")
def tiny_bundle(trained_bundle: BundleFactory) -> Path:
    """The bundle trained on the tiny ratings (see :func:`trained_bundle`)."""
    return trained_bundle("tiny")


@pytest.fixture(scope="session")
def sample_bundle(trained_bundle: BundleFactory) -> Path:
    """The bundle trained on sample_data/ (see :func:`trained_bundle`)."""
    return trained_bundle("sample")


@pytest.fixture
def refingerprint() -> Callable[[Path], None]:
    """``refingerprint(folder)``: make a bundle's recorded fingerprint match its (edited) files
    and metadata, as a careless or foreign writer would, so a test reaches the load-time checks
    behind the fingerprint."""
    import json

    from batchrank.bundle_files import fingerprint

    def refresh(folder: Path) -> None:
        meta = json.loads((folder / "metadata.json").read_text())
        meta["model_fingerprint"] = fingerprint(folder, meta)
        (folder / "metadata.json").write_text(json.dumps(meta))

    return refresh


@pytest.fixture(scope="session", autouse=True)
def _jax_compilation_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Share XLA compilations between the tests' many small models of the same shapes.

    Keras compiles fresh train / predict functions for every model; on a small CPU machine that
    compilation dominates a tiny training run. JAX's persistent cache turns repeats into disk
    reads. Only speed changes; if this JAX lacks the options the tests just run slower.
    The same settings go into the environment (JAX reads ``JAX_<OPTION>``), so a test's
    subprocess that trains (``batchrank run`` with a ``[train]`` step) shares the cache too.
    """
    import jax

    folder = tmp_path_factory.mktemp("jax-cache")
    settings = {
        "jax_compilation_cache_dir": str(folder),
        "jax_persistent_cache_min_compile_time_secs": "0",
        "jax_persistent_cache_min_entry_size_bytes": "-1",
    }
    with contextlib.suppress(AttributeError, ValueError):
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    with pytest.MonkeyPatch.context() as env:
        for name, value in settings.items():
            env.setenv(name.upper(), value)
        yield


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """One small local Ray instance for every Ray test (skips them when ray is not importable)."""
    import logging

    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
        )
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A real S3 API (moto's server on 127.0.0.1, a free port) for the whole session, with
    ``AWS_ENDPOINT_URL`` and dummy credentials set in the environment (subprocesses inherit
    them); stopped at the end."""
    from tests.s3server import MotoS3, use_env

    with MotoS3() as server, contextlib.contextmanager(use_env)(server.env):
        yield server


@pytest.fixture
def s3(s3_server: Any) -> str:
    """A fresh, empty bucket on the session's S3 server: ``s3://b-<hex>``."""
    return f"s3://{s3_server.bucket()}"
