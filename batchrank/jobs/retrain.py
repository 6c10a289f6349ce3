"""The ``[train]`` step of a job: decide whether to (re)train, then train.

Keras, JAX and the data loaders are imported only when a decision needs them, so a run that is
refused (bad file, held lock) stays fast.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrank.bundle import read_metadata
from batchrank.jobs.jobspec import TrainStep
from batchrank.jobs.paths import shown

if TYPE_CHECKING:
    from batchrank.presets import TrainConfig
    from batchrank.sources import RatingsData

__all__ = ["TrainDecision", "decide", "train_config", "train_step"]

log = logging.getLogger("batchrank.jobs")


@dataclass(frozen=True, kw_only=True)
class TrainDecision:
    """Whether the step trains, and why."""

    train: bool
    """Whether a new bundle is trained."""
    reason: str
    """Why, in a few words (for the log and the manifest)."""
    data: RatingsData | None = None
    """The ratings, when deciding needed them already (``if-data-changed``)."""


def train_config(step: TrainStep) -> TrainConfig:
    """The step's preset with its overrides."""
    from batchrank.holdout import split_fraction
    from batchrank.presets import preset

    return preset(step.preset).with_overrides(
        epochs=step.epochs,
        test_fraction=split_fraction(step.test_fraction, step.test_ratings),
        seed=step.seed,
    )


def _load(step: TrainStep) -> RatingsData:
    from batchrank.sources import Columns, load_ratings

    columns = Columns(
        user=step.user_col, item=step.item_col, rating=step.rating_col, title=step.title_col
    )
    return load_ratings(step.ratings, columns=columns, items=step.items)


def _plain(value: Any) -> Any:
    """A value as JSON would give it back (tuples become lists, and so on)."""
    return json.loads(json.dumps(value))


def decide(step: TrainStep, *, trained_by_this_run: str | None = None) -> TrainDecision:
    """Apply the step's ``retrain`` policy.

    Args:
        step: the ``[train]`` step.
        trained_by_this_run: model fingerprint of the bundle an earlier attempt of this run
            (same job, same date) trained before it died; such a bundle is kept.

    Raises:
        ModelError: a folder exists at ``out`` but is not a readable bundle.
        DataError: ``if-data-changed`` could not read the ratings.
    """
    exists = step.out.exists()
    meta = read_metadata(step.out) if exists else None
    if (
        meta is not None
        and trained_by_this_run is not None
        and meta.get("model_fingerprint") == trained_by_this_run
    ):
        return TrainDecision(train=False, reason="this run trained it before it was interrupted")
    if step.retrain == "always":
        return TrainDecision(train=True, reason='retrain = "always"')
    if meta is None:
        return TrainDecision(train=True, reason=f"no bundle at {shown(step.out)}")
    if step.retrain == "if-missing":
        return TrainDecision(train=False, reason="the bundle exists and retrain = if-missing")
    data = _load(step)
    recorded = (
        meta.get("data", {}).get("fingerprint") if isinstance(meta.get("data"), dict) else None
    )
    if recorded != data.fingerprint:
        return TrainDecision(train=True, reason="the ratings changed", data=data)
    if meta.get("hyperparameters") != _plain(train_config(step).to_dict()):
        return TrainDecision(train=True, reason="the training settings changed", data=data)
    if step.rating_scale is not None and meta.get("rating_scale") != list(step.rating_scale):
        return TrainDecision(train=True, reason="the rating scale changed", data=data)
    return TrainDecision(train=False, reason="the ratings and settings are unchanged", data=data)


def train_step(
    step: TrainStep, data: RatingsData | None = None, *, verbose: int | str = 0
) -> dict[str, Any]:
    """Train the step's preset and write the bundle atomically to ``step.out``.

    Returns:
        The new bundle's metadata.
    """
    from batchrank.training import fit_bundle

    if data is None:
        data = _load(step)
    from batchrank.sources import Columns

    columns = Columns(
        user=step.user_col, item=step.item_col, rating=step.rating_col, title=step.title_col
    )
    held = None
    if step.test_ratings is not None:
        from batchrank.sources import load_ratings

        held = load_ratings(step.test_ratings, columns=columns)
    config = train_config(step)
    tables = None
    if config.features:  # the MovieLens side files beside the ratings (docs/features.md)
        from batchrank.feature_sources import load_side_tables

        tables = load_side_tables(
            step.ratings, user_column=step.user_col, item_column=step.item_col
        )
    result = fit_bundle(
        data,
        config,
        rating_scale=step.rating_scale,
        verbose=verbose,
        columns=columns,  # so score defaults to the ratings' column names
        test_data=held,
        features=tables,
    )
    result.bundle.save(Path(step.out))
    return result.bundle.metadata
