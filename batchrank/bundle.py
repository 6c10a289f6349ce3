"""Model bundles: the folder a training run writes and the scorer loads.

A bundle holds ``model.keras`` (the native Keras format, loaded with ``safe_mode=True``),
``users.parquet`` and ``items.parquet`` (the id vocabularies; ``items.parquet`` also carries the
titles where known), ``metadata.json`` and ``training_curve.png``. It is written to a temporary
folder beside the target and renamed into place. The files' names, the fingerprint over them
and their readers are :mod:`batchrank.bundle_files`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.bundle_checks import check_metadata, check_weights
from batchrank.bundle_fetch import localize
from batchrank.bundle_files import (
    CURVE_FILE,
    ITEMS_FILE,
    META_FILE,
    MODEL_FILE,
    SCORED_METADATA,
    USERS_FILE,
    WEIGHTS_FILE,
    fingerprint,
    fingerprint_v1,
    read_weights,
    vocabularies,
)
from batchrank.errors import ModelError, first_line
from batchrank.fs import local_or_remote
from batchrank.imported import custom_objects_of, with_rows
from batchrank.storage import atomic_dir, atomic_file
from batchrank.vocab import Vocabulary

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_KIND",
    "DEFAULT_COLUMNS",
    "SCORED_METADATA",
    "Bundle",
    "LabelTransform",
    "load_bundle",
    "read_metadata",
    "upgrade_bundle",
]

BUNDLE_FORMAT = 2
"""Version 2 fingerprints the score-relevant metadata too; version 1 bundles are refused."""
BUNDLE_KIND = "batchrank-bundle"
DEFAULT_COLUMNS = {"user": "user_id", "item": "movie_id", "rating": "rating", "title": "title"}
"""Column names of bundles that do not record their training data's (``batchrank``'s own)."""


@dataclass(frozen=True)
class LabelTransform:
    """Ratings on ``[low, high]`` become labels ``(rating - low) / (high - low)``."""

    low: float
    high: float

    def to_label(self, rating: np.ndarray) -> np.ndarray:
        """Rating -> label."""
        return (np.asarray(rating, dtype=np.float64) - self.low) / (self.high - self.low)

    def to_stars(self, label: np.ndarray) -> np.ndarray:
        """Label -> rating on the data's scale (not clipped)."""
        return self.low + (self.high - self.low) * np.asarray(label, dtype=np.float64)

    @property
    def clip_high(self) -> float:
        """Upper clip of displayed stars: the scale's maximum."""
        return self.high

    def to_dict(self) -> dict[str, Any]:
        """For metadata.json."""
        return {
            "type": "affine",
            "formula": "label = (rating - low) / (high - low)",
            "low": self.low,
            "high": self.high,
        }


@dataclass
class Bundle:
    """A trained model with its vocabularies, titles and metadata."""

    model: Any
    users: Vocabulary
    items: Vocabulary
    titles: pa.Array | None
    """Titles aligned with ``items.ids`` (null where unknown), or None."""
    metadata: dict[str, Any]
    path: Path | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, np.ndarray] | None = None
    """RankingModel arrays from ``weights.npz``, when the model itself was not loaded."""
    rows: tuple[np.ndarray, np.ndarray] | None = None
    """Imported generic bundles: the model's embedding row of each user and item id (the
    ``row`` column of the vocabularies; see :mod:`batchrank.imported`), else None."""

    @property
    def transform(self) -> LabelTransform:
        """The bundle's label transform."""
        lt = self.metadata["label_transform"]
        return LabelTransform(float(lt["low"]), float(lt["high"]))

    @property
    def columns(self) -> dict[str, str]:
        """The training data's column names: keys ``user``, ``item``, ``rating``, ``title``.

        Bundles that do not record them get batchrank's defaults (:data:`DEFAULT_COLUMNS`).
        """
        recorded = self.metadata.get("columns")
        return dict(recorded) if isinstance(recorded, dict) else dict(DEFAULT_COLUMNS)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the model weights and vocabularies."""
        return str(self.metadata["model_fingerprint"])

    def items_table(self) -> pa.Table:
        """``movie_id``, ``index`` and ``title`` of every known movie (and ``row``, imported)."""
        table = self.items.to_table("movie_id")
        titles = self.titles if self.titles is not None else pa.nulls(len(self.items), pa.string())
        return with_rows(table.append_column("title", titles), self.rows, 1)

    def save(self, target: Path) -> Path:
        """Write the bundle atomically to ``target`` (a folder, or an object-store prefix)."""
        target = local_or_remote(Path(target))
        with atomic_dir(target) as tmp:
            self.model.save(tmp / MODEL_FILE)
            from batchrank.model import RankingModel, ranking_weights

            if isinstance(self.model, RankingModel):
                np.savez(tmp / WEIGHTS_FILE, **ranking_weights(self.model))  # type: ignore[arg-type]
            pq.write_table(
                with_rows(self.users.to_table("user_id"), self.rows, 0), tmp / USERS_FILE
            )
            pq.write_table(self.items_table(), tmp / ITEMS_FILE)
            meta = dict(self.metadata)
            meta["format_version"] = BUNDLE_FORMAT
            meta["kind"] = BUNDLE_KIND
            meta["model_fingerprint"] = fingerprint(tmp, meta)
            if self.history:
                _plot_curve(self.history, tmp / CURVE_FILE, meta.get("preset", ""))
            meta["files"] = sorted([*(p.name for p in tmp.iterdir()), META_FILE])
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            self.metadata = meta
        self.path = target
        return target


def _plot_curve(history: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "rmse"), strict=True):
        for split in ("train", "val"):
            key = metric if split == "train" else f"val_{metric}"
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} (label units)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"batchrank training curve ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@contextlib.contextmanager
def _named(local: Path, uri: str | None) -> Iterator[None]:
    """Errors about a fetched bundle's local copy name its URI instead."""
    try:
        yield
    except ModelError as e:
        if uri is None:
            raise
        raise ModelError(str(e).replace(str(local), uri)) from e


def read_metadata(path: Path) -> dict[str, Any]:
    """Read and check a bundle's metadata without loading the model (a remote bundle is
    fetched first: :mod:`batchrank.bundle_fetch`)."""
    local, uri = localize(local_or_remote(Path(path)))
    with _named(local, uri):
        return _read_metadata(local, (BUNDLE_FORMAT,))


def _read_metadata(path: Path, versions: tuple[int, ...]) -> dict[str, Any]:
    if not path.exists():
        raise ModelError(f"{path}: model bundle not found")
    if not path.is_dir():
        raise ModelError(f"{path}: not a model bundle (expected a folder with {META_FILE})")
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise ModelError(f"{path}: not a batchrank model bundle (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{meta_path}: corrupt metadata ({first_line(e)})") from e
    except OSError as e:
        raise ModelError(f"{meta_path}: cannot read metadata ({e.strerror or e})") from e
    if not isinstance(meta, dict) or meta.get("kind") != BUNDLE_KIND:
        raise ModelError(f"{meta_path}: not a batchrank model bundle (kind is not {BUNDLE_KIND!r})")
    version = meta.get("format_version")
    if version not in versions or isinstance(version, bool):
        how = " (its metadata is not fingerprinted)" if version == 1 else ""
        fix = (
            "retrain, or upgrade it in place with batchrank.bundle.upgrade_bundle()"
            if version == 1
            else "retrain with this batchrank"
        )
        raise ModelError(
            f"{meta_path}: bundle format version {version!r} is not supported{how}; "
            f"expected {BUNDLE_FORMAT} ({fix})"
        )
    listed = meta.get("files")
    needed = [MODEL_FILE, USERS_FILE, ITEMS_FILE]
    if isinstance(listed, list) and WEIGHTS_FILE in listed:
        needed.append(WEIGHTS_FILE)
    for name in needed:
        if not (path / name).is_file():
            raise ModelError(f"{path}: bundle is incomplete ({name} missing)")
    return meta


def load_bundle(
    path: str | Path, *, verify: bool = True, model: bool = True, weights: bool = True
) -> Bundle:
    """Load a bundle written by :meth:`Bundle.save`, checking that its parts fit together.

    Args:
        path: the bundle folder.
        verify: recompute the fingerprint and refuse a bundle whose files or score-relevant
            metadata changed. The shape checks run either way.
        model: deserialize the Keras model. With ``False`` and a ``weights.npz`` in the
            bundle, only the arrays are read (no Keras import): what the scorer needs.
        weights: with ``model=False``, also read the arrays; without, only the vocabularies
            and metadata (``evaluate --ranking``: memory independent of the model's size).

    Raises:
        ModelError: one line naming the bundle file and what was expected.
    """
    local, uri = localize(local_or_remote(Path(path)))
    with _named(local, uri):
        return _load_local(local, verify=verify, model=model, weights=weights)


def _load_local(path: Path, *, verify: bool, model: bool, weights: bool = True) -> Bundle:
    meta = _read_metadata(path, (BUNDLE_FORMAT,))
    check_metadata(meta, path / META_FILE)
    if verify:
        try:
            actual = fingerprint(path, meta)
        except OSError as e:
            raise ModelError(f"{path}: cannot read the bundle ({e.strerror or e})") from e
        if actual != meta.get("model_fingerprint"):
            raise ModelError(
                f"{path}: bundle files or metadata do not match their fingerprint "
                "(corrupt or edited; retrain or restore the bundle)"
            )
    users, items, titles, rows = vocabularies(path, meta)
    if not model and (not weights or (path / WEIGHTS_FILE).exists()):
        arrays = read_weights(path / WEIGHTS_FILE) if weights else None
        if arrays is not None:
            check_weights(arrays, users.size, items.size, path / WEIGHTS_FILE)
        return Bundle(
            model=None,
            users=users,
            items=items,
            titles=titles,
            metadata=meta,
            path=path,
            weights=arrays,
            rows=rows,
        )
    from batchrank._backend import keras_module

    keras = keras_module()
    from batchrank import feature_model  # noqa: F401  (registers FeatureRankingModel)
    from batchrank.model import RankingModel, ranking_weights

    try:
        custom = custom_objects_of(meta, path / META_FILE)
        model_obj = keras.saving.load_model(
            path / MODEL_FILE, safe_mode=True, compile=False, custom_objects=custom
        )
    except ModelError:
        raise
    except Exception as e:
        first = first_line(e)
        raise ModelError(f"{path / MODEL_FILE}: cannot load the model: {first}") from e
    if isinstance(model_obj, RankingModel):
        check_weights(ranking_weights(model_obj), users.size, items.size, path / MODEL_FILE)
    return Bundle(
        model=model_obj,
        users=users,
        items=items,
        titles=titles,
        metadata=meta,
        path=path,
        rows=rows,
    )


def upgrade_bundle(path: str | Path) -> dict[str, Any]:
    """Re-save a format-1 bundle as format 2, in place, and return its new metadata.

    Format 1 fingerprinted the files but not ``metadata.json``. The files are checked against
    that old fingerprint and the whole bundle against the load-time checks; then the metadata
    as it now stands (label transform included: calling this vouches for it) is fingerprinted
    and written atomically. A format-2 bundle is returned unchanged.

    Raises:
        ModelError: the bundle is not format 1 or 2, or fails its old fingerprint or a check.
    """
    path = Path(path)
    meta = _read_metadata(path, (1, BUNDLE_FORMAT))
    if meta["format_version"] == BUNDLE_FORMAT:
        return meta
    check_metadata(meta, path / META_FILE)
    if fingerprint_v1(path) != meta.get("model_fingerprint"):
        raise ModelError(f"{path}: bundle files do not match their format-1 fingerprint")
    users, items, _, _ = vocabularies(path, meta)
    if (path / WEIGHTS_FILE).exists():
        check_weights(
            read_weights(path / WEIGHTS_FILE), users.size, items.size, path / WEIGHTS_FILE
        )
    meta = {**meta, "format_version": BUNDLE_FORMAT}
    meta["model_fingerprint"] = fingerprint(path, meta)
    with atomic_file(path / META_FILE) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
