"""Model bundles: the folder a training run writes and the scorer loads.

A bundle holds ``model.keras`` (the native Keras format, loaded with ``safe_mode=True``),
``users.parquet`` and ``items.parquet`` (the id vocabularies; ``items.parquet`` also carries the
titles where known), ``metadata.json`` and ``training_curve.png``. It is written to a temporary
folder beside the target and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.atomic import atomic_dir
from batchrank.errors import ModelError, first_line
from batchrank.vocab import Vocabulary

__all__ = ["BUNDLE_FORMAT", "BUNDLE_KIND", "Bundle", "LabelTransform", "load_bundle"]

BUNDLE_FORMAT = 1
BUNDLE_KIND = "batchrank-bundle"
MODEL_FILE, USERS_FILE, ITEMS_FILE, META_FILE, CURVE_FILE, WEIGHTS_FILE = (
    "model.keras",
    "users.parquet",
    "items.parquet",
    "metadata.json",
    "training_curve.png",
    "weights.npz",
)


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

    @property
    def transform(self) -> LabelTransform:
        """The bundle's label transform."""
        lt = self.metadata["label_transform"]
        return LabelTransform(float(lt["low"]), float(lt["high"]))

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the model weights and vocabularies."""
        return str(self.metadata["model_fingerprint"])

    def items_table(self) -> pa.Table:
        """``movie_id``, ``index`` and ``title`` of every known movie."""
        table = self.items.to_table("movie_id")
        titles = self.titles if self.titles is not None else pa.nulls(len(self.items), pa.string())
        return table.append_column("title", titles)

    def save(self, target: Path) -> Path:
        """Write the bundle atomically to ``target``."""
        target = Path(target)
        with atomic_dir(target) as tmp:
            self.model.save(tmp / MODEL_FILE)
            from batchrank.model import RankingModel, ranking_weights

            if isinstance(self.model, RankingModel):
                np.savez(tmp / WEIGHTS_FILE, **ranking_weights(self.model))  # type: ignore[arg-type]
            self.users.save(tmp / USERS_FILE, "user_id")
            pq.write_table(self.items_table(), tmp / ITEMS_FILE)
            meta = dict(self.metadata)
            meta["format_version"] = BUNDLE_FORMAT
            meta["kind"] = BUNDLE_KIND
            meta["model_fingerprint"] = _fingerprint(tmp)
            if self.history:
                _plot_curve(self.history, tmp / CURVE_FILE, meta.get("preset", ""))
            meta["files"] = sorted([*(p.name for p in tmp.iterdir()), META_FILE])
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            self.metadata = meta
        self.path = target
        return target


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for name in (MODEL_FILE, USERS_FILE, ITEMS_FILE, WEIGHTS_FILE):
        if name == WEIGHTS_FILE and not (folder / name).exists():
            continue
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return "sha256:" + h.hexdigest()


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


def read_metadata(path: Path) -> dict[str, Any]:
    """Read and check a bundle's metadata without loading the model."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model bundle not found")
    if not path.is_dir():
        raise ModelError(f"{path}: not a model bundle (expected a folder with {META_FILE})")
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise ModelError(f"{path}: not a batchrank model bundle (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{meta_path}: corrupt metadata ({e})") from e
    except OSError as e:
        raise ModelError(f"{meta_path}: cannot read metadata ({e.strerror or e})") from e
    if not isinstance(meta, dict) or meta.get("kind") != BUNDLE_KIND:
        raise ModelError(f"{meta_path}: not a batchrank model bundle (kind is not {BUNDLE_KIND!r})")
    version = meta.get("format_version")
    if version != BUNDLE_FORMAT:
        raise ModelError(
            f"{meta_path}: bundle format version {version!r} is not supported; "
            f"expected {BUNDLE_FORMAT} (retrain with this batchrank)"
        )
    for name in (MODEL_FILE, USERS_FILE, ITEMS_FILE):
        if not (path / name).exists():
            raise ModelError(f"{path}: bundle is incomplete ({name} missing)")
    return meta


def load_bundle(path: str | Path, *, verify: bool = True, model: bool = True) -> Bundle:
    """Load a bundle written by :meth:`Bundle.save`.

    Args:
        path: the bundle folder.
        verify: recompute the fingerprint and refuse a bundle whose files changed.
        model: deserialize the Keras model. With ``False`` and a ``weights.npz`` in the
            bundle, only the arrays are read (no Keras import): what the scorer needs.
    """
    path = Path(path)
    meta = read_metadata(path)
    if verify and _fingerprint(path) != meta.get("model_fingerprint"):
        raise ModelError(f"{path}: bundle files do not match their fingerprint (corrupt or edited)")
    if not model and (path / WEIGHTS_FILE).exists():
        try:
            with np.load(path / WEIGHTS_FILE, allow_pickle=False) as npz:
                weights = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as e:
            raise ModelError(f"{path / WEIGHTS_FILE}: cannot read the weights ({e})") from e
        users, items, titles = _vocabularies(path)
        return Bundle(
            model=None,
            users=users,
            items=items,
            titles=titles,
            metadata=meta,
            path=path,
            weights=weights,
        )
    from batchrank._backend import keras_module

    keras = keras_module()
    import batchrank.model  # noqa: F401  (registers RankingModel)

    try:
        model_obj = keras.saving.load_model(path / MODEL_FILE, safe_mode=True, compile=False)
    except Exception as e:
        first = first_line(e)
        raise ModelError(f"{path / MODEL_FILE}: cannot load the model: {first}") from e
    users, items, titles = _vocabularies(path)
    return Bundle(
        model=model_obj, users=users, items=items, titles=titles, metadata=meta, path=path
    )


def _vocabularies(path: Path) -> tuple[Vocabulary, Vocabulary, pa.Array | None]:
    try:
        users = Vocabulary.load(path / USERS_FILE, "user_id")
        items_tbl = pq.read_table(path / ITEMS_FILE)
        items = Vocabulary(
            ids=items_tbl.column("movie_id").combine_chunks(),
            kind=Vocabulary.load(path / ITEMS_FILE, "movie_id").kind,
        )
        titles = (
            items_tbl.column("title").combine_chunks()
            if "title" in items_tbl.column_names
            else None
        )
    except Exception as e:
        raise ModelError(f"{path}: cannot read the vocabularies ({e})") from e
    return users, items, titles
