"""Held-out evaluation for training: the shuffled test split, a separate test file, or none.

``train --test-fraction 0`` trains on every rating given (a nightly production retrain);
``--test-ratings FILE`` evaluates on a separate held-out file instead of a split, and that
RMSE is what the bundle records. :func:`test_metrics` builds the bundle's test metrics either
way; with no test set the ``test_*`` RMSE keys are absent (never NaN in ``metadata.json``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from batchrank.bundle import LabelTransform
from batchrank.errors import ConfigError
from batchrank.sources import ITEM, RATING, USER, RatingsData
from batchrank.vocab import Vocabulary, coerce_ids

__all__ = ["indexed_ratings", "split_fraction", "test_metrics"]


def split_fraction(test_fraction: float | None, test_ratings: object) -> float | None:
    """The test split to use: none beside a test file, unless one is asked for explicitly."""
    if test_ratings is None:
        return test_fraction
    if test_fraction is not None and test_fraction > 0:
        raise ConfigError(
            f"test fraction {test_fraction} and test ratings {test_ratings}: give one held-out "
            "set (a test file, or a share of the ratings)"
        )
    return 0.0


def indexed_ratings(
    users: Vocabulary, items: Vocabulary, transform: LabelTransform, data: RatingsData
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vocabulary indices (0 = unknown, scored with the OOV row) and labels of ``data``."""
    t = data.ratings
    uc, _ = coerce_ids(t.column(USER), users.kind, where=f"{data.source}: `{USER}`")
    ic, _ = coerce_ids(t.column(ITEM), items.kind, where=f"{data.source}: `{ITEM}`")
    labels = transform.to_label(t.column(RATING).to_numpy())
    return users.lookup(uc), items.lookup(ic), labels


def test_metrics(
    predict: Any,
    u: np.ndarray,
    i: np.ndarray,
    labels: np.ndarray,
    train_labels: np.ndarray,
    span: float,
    source: str,
) -> dict[str, Any]:
    """``test_rmse`` (stars), ``test_rmse_normalized``, the global-mean baseline, counts.

    ``predict(u, i)`` gives labels; ``source`` is ``"split"`` or the test file.
    """
    out: dict[str, Any] = {"test_count": len(labels), "test_source": source}
    if len(labels) == 0:
        return out
    pred = np.asarray(predict(u, i), dtype=np.float64)
    rmse = float(np.sqrt(np.mean((pred - labels) ** 2)))
    baseline = float(np.sqrt(np.mean((labels - float(np.mean(train_labels))) ** 2)))
    out.update(
        test_rmse=rmse * span,
        test_rmse_normalized=rmse,
        test_rmse_global_mean=baseline * span,
    )
    if source != "split":
        out.update(test_unknown_users=int((u == 0).sum()), test_unknown_movies=int((i == 0).sum()))
    return out
