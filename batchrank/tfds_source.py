"""The ``tfds:`` training source: MovieLens through tensorflow-datasets.

TensorFlow and tensorflow-datasets are imported here only, when a ``tfds:`` source is used, so
``batchrank --help`` and scoring never pay for them.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from batchrank.errors import ConfigError, DataError, first_line
from batchrank.scoring.schema import MOVIE_ID as ITEM
from batchrank.scoring.schema import RATING, TITLE
from batchrank.scoring.schema import USER_ID as USER

__all__ = ["INSTALL_HINT", "PROBE_TIMEOUT_S", "load_tfds_ratings", "reachable", "require_tfds"]

INSTALL_HINT = "pip install 'batchrank[tfds]'"
"""TensorFlow and tensorflow-datasets are the ``tfds`` extra: a plain install has neither."""

_MOVIES_FOR = {"movielens/100k-ratings": "movielens/100k-movies"}
PROBE_TIMEOUT_S = 4.0
"""How long to wait for the download host before failing (name lookup and TCP connect)."""
# Where tensorflow-datasets downloads a data set from that is not in its local cache.
_HOSTS = {"movielens": "files.grouplens.org"}
_DEFAULT_HOST = "storage.googleapis.com"
_INT_ID = re.compile(r"[+-]?[0-9]{1,18}")


def _as_ids(values: np.ndarray) -> pa.Array:
    text = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    # ASCII digits that fit int64, as vocab.coerce_ids accepts (str.isdigit takes "²" too).
    if text and all(_INT_ID.fullmatch(t.strip()) for t in text):
        return pa.array([int(t) for t in text], pa.int64())
    return pa.array(text, pa.string())


def _load_columns(tfds: Any, name: str, keys: tuple[str, ...], spec: str) -> dict[str, np.ndarray]:
    """The ``keys`` features of a tfds data set's train split, as numpy arrays.

    Not ``batch_size=-1``: that pads every feature (genres, ...) into one batch, and with mocked
    or unknown split sizes tfds batches by ``sys.maxsize``, which aborts the process.
    """
    ds = tfds.load(name, split="train")
    missing = [k for k in keys if k not in ds.element_spec]
    if missing:
        raise DataError(
            f"{spec}: tfds data set has no `{missing[0]}` feature; found {sorted(ds.element_spec)}"
        )
    ds = ds.map(lambda ex: {k: ex[k] for k in keys}).batch(65536)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for batch in tfds.as_numpy(ds):
        for k in keys:
            parts[k].append(np.asarray(batch[k]))
    return {k: np.concatenate(v) if v else np.zeros((0,), dtype=object) for k, v in parts.items()}


def _missing(spec: str, why: str) -> ConfigError:
    return ConfigError(
        f"{spec}: the tfds: source needs TensorFlow and tensorflow-datasets, which are not "
        f"installed ({why}); install them with {INSTALL_HINT}, or train on a local MovieLens "
        "folder or file"
    )


def require_tfds(spec: str) -> None:
    """Raise :class:`ConfigError` naming the ``tfds`` extra when tensorflow-datasets is absent.

    Only looks the package up (nothing is imported), for ``batchrank validate``.
    """
    import importlib.util

    try:
        found = importlib.util.find_spec("tensorflow_datasets") is not None
        why = "no module named 'tensorflow_datasets'"
    except (ImportError, ValueError) as e:
        found, why = False, first_line(e)
    if not found:
        raise _missing(spec, why)


def reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to ``host:port`` opens within ``timeout`` seconds, else why not.

    The name lookup runs in a thread too, as a resolver without network can block far longer
    than the timeout.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as e:
            outcome.append(e.strerror or type(e).__name__)

    thread = threading.Thread(target=probe, name="batchrank-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def _download_is_mocked(tfds: Any) -> bool:
    """Whether ``tfds.testing.mock_data`` replaced the download step (nothing is fetched)."""
    step = getattr(tfds.core.DatasetBuilder, "download_and_prepare", None)
    return getattr(step, "__module__", "").startswith("tensorflow_datasets.testing")


def _ensure_available(tfds: Any, name: str, spec: str) -> None:
    """Fail in seconds when ``name`` is neither in the local tfds cache nor downloadable.

    Without this, tensorflow-datasets retries an unreachable download for minutes.
    """
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # not "Variant folder ... has no dataset_info.json"
    try:
        builder = tfds.builder(name)
        if builder.is_prepared() or _download_is_mocked(tfds):
            return
        data_dir = str(builder.data_dir)
    except Exception:  # an unknown name and the like: tfds.load reports it below
        return
    finally:
        absl.setLevel(level)
    host = _HOSTS.get(name.split("/", 1)[0], _DEFAULT_HOST)
    why = reachable(host)
    if why is not None:
        raise DataError(
            f"{spec}: not in the local tensorflow-datasets cache ({data_dir}) and its download "
            f"host {host} cannot be reached ({why}); run once with network, or train on a local "
            "MovieLens folder or file instead"
        )


def load_tfds_ratings(spec: str) -> tuple[pa.Table, pa.Table | None]:
    """Load ``tfds:movielens/...-ratings`` (and the matching movies for titles).

    Returns:
        The ratings (``user_id, movie_id, rating``) and the titles (``movie_id, title``) when
        the data set has a movies companion; :mod:`batchrank.sources` wraps them.
    """

    name = spec.removeprefix("tfds:")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # the `tfds` extra is not installed, or a broken install
        raise _missing(spec, first_line(e)) from e
    _ensure_available(tfds, name, spec)
    movies_name = _MOVIES_FOR.get(name)
    if movies_name is not None:
        _ensure_available(tfds, movies_name, f"tfds:{movies_name}")
    try:
        data = _load_columns(tfds, name, ("user_id", "movie_id", "user_rating"), spec)
    except DataError:
        raise
    except Exception as e:
        first = first_line(e)
        raise DataError(f"{spec}: cannot load the tfds data set: {first}") from e
    if len(data["user_rating"]) == 0:
        raise DataError(f"{spec}: tfds data set has no ratings")
    ratings = pa.table(
        {
            USER: _as_ids(data["user_id"]),
            ITEM: _as_ids(data["movie_id"]),
            RATING: pa.array(np.asarray(data["user_rating"], dtype=np.float64)),
        }
    )
    items = None
    if movies_name is not None:
        try:
            movies = _load_columns(tfds, movies_name, ("movie_id", "movie_title"), movies_name)
            titles = [
                t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in movies["movie_title"]
            ]
            items = pa.table({ITEM: _as_ids(movies["movie_id"]), TITLE: pa.array(titles)})
        except Exception as e:
            first = first_line(e)
            raise DataError(f"tfds:{movies_name}: cannot load titles: {first}") from e
    return ratings, items
