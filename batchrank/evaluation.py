"""Evaluation: RMSE of a bundle on any ratings file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from batchrank.bundle import load_bundle
from batchrank.sources import Columns, load_ratings

__all__ = ["evaluate"]


def evaluate(
    model: str | Path, ratings: str | Path, *, columns: Columns | None = None
) -> dict[str, Any]:
    """RMSE in stars (and label units) of the bundle at ``model`` on ``ratings``.

    Unknown users and movies are scored with the reserved OOV row and counted. Predictions
    come from the scorer's predictor, so an imported bundle is evaluated as it is scored.
    """
    from batchrank.holdout import indexed_ratings
    from batchrank.scoring.predict import make_predictor

    bundle = load_bundle(model, model=False)
    data = load_ratings(ratings, columns=columns or Columns())
    t = data.ratings
    transform = bundle.transform
    u, i, labels = indexed_ratings(bundle.users, bundle.items, transform, data)
    # the scorer's own predictor: folded bundles need no Keras, imported ones run as scored
    pred, _ = make_predictor(bundle).predict(u, i)
    err = pred.astype(np.float64) - labels
    rmse_norm = float(np.sqrt(np.mean(err**2)))
    return {
        "rmse": rmse_norm * (transform.high - transform.low),
        "rmse_normalized": rmse_norm,
        "count": int(t.num_rows),
        "unknown_users": int((u == 0).sum()),
        "unknown_movies": int((i == 0).sum()),
        "model": str(model),
        "ratings": data.source,
    }
