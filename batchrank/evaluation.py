"""Evaluation: RMSE of a bundle on any ratings file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from batchrank.bundle import load_bundle
from batchrank.sources import ITEM, RATING, USER, Columns, load_ratings
from batchrank.vocab import coerce_ids

__all__ = ["evaluate"]


def evaluate(
    model: str | Path, ratings: str | Path, *, columns: Columns | None = None
) -> dict[str, Any]:
    """RMSE in stars (and label units) of the bundle at ``model`` on ``ratings``.

    Unknown users and movies are scored with the reserved OOV row and counted.
    """
    bundle = load_bundle(model)
    data = load_ratings(ratings, columns=columns or Columns())
    t = data.ratings
    uc, _ = coerce_ids(t.column(USER), bundle.users.kind, where=f"{data.source}: `{USER}`")
    ic, _ = coerce_ids(t.column(ITEM), bundle.items.kind, where=f"{data.source}: `{ITEM}`")
    u = bundle.users.lookup(uc)
    i = bundle.items.lookup(ic)
    transform = bundle.transform
    labels = transform.to_label(t.column(RATING).to_numpy())
    pred = bundle.model.predict({"user": u, "item": i}, batch_size=8192, verbose=0)[:, 0]
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
