"""Training on the real MovieLens 100K (../shared/data/ml-100k); skipped when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchrank.bundle import load_bundle
from batchrank.training import train

# conftest skips `realdata` tests when ../shared/data/ml-100k is absent (its requires_ml100k)
pytestmark = [pytest.mark.realdata, pytest.mark.slow]

# The tutorial's recipe (preset `seed`) reaches ~0.257 label units on the 80/20 split.
SEED_RMSE_RANGE = (0.22, 0.29)
# Preset `default` targets 0.91 stars; it is being tuned, so the bar is looser for now.
# Lower this to 0.91 once presets.py's default preset reaches it.
DEFAULT_PRESET_MAX_RMSE = 0.93


def test_seed_preset_matches_the_tutorial(ml100k: Path, tmp_path: Path) -> None:
    result = train(ml100k, tmp_path / "seed", preset="seed", verbose=0)
    m = result.metrics
    print(f"seed: test RMSE {m['test_rmse']:.4f} stars, {m['test_rmse_normalized']:.4f} label")
    low, high = SEED_RMSE_RANGE
    assert low <= m["test_rmse_normalized"] <= high
    assert m["test_rmse"] == pytest.approx(4 * m["test_rmse_normalized"])
    assert (m["test_count"], m["train_count"]) == (20_000, 80_000)
    bundle = load_bundle(tmp_path / "seed")
    meta = bundle.metadata
    assert (meta["data"]["users"], meta["data"]["movies"], meta["data"]["ratings"]) == (
        943,
        1682,
        100_000,
    )
    assert meta["rating_scale"] == [1.0, 5.0]
    # u.item is ISO-8859-1: its accented titles arrive intact
    titles = dict(zip(bundle.items.ids.to_pylist(), bundle.titles.to_pylist(), strict=True))
    assert titles[1] == "Toy Story (1995)"
    assert any("é" in t for t in titles.values() if t)
    assert all(titles.values())


def test_default_preset_beats_seed(ml100k: Path, tmp_path: Path) -> None:
    result = train(ml100k, tmp_path / "default", preset="default", verbose=0)
    m = result.metrics
    print(
        f"default: test RMSE {m['test_rmse']:.4f} stars ({m['test_rmse_normalized']:.4f} label, "
        f"{m['epochs_run']} epochs; global mean {m['test_rmse_global_mean']:.4f})"
    )
    assert np.isfinite(m["test_rmse"])
    assert m["test_rmse"] <= DEFAULT_PRESET_MAX_RMSE
    assert m["test_rmse"] < m["test_rmse_global_mean"]


def test_features_preset_reaches_the_goal(ml100k: Path, tmp_path: Path) -> None:
    """`train` without a preset picks `features` on the MovieLens folder: ≤ 0.91 stars."""
    result = train(ml100k, tmp_path / "features", verbose=0)
    m = result.metrics
    print(f"features: test RMSE {m['test_rmse']:.4f} stars ({m['epochs_run']} epochs)")
    assert result.bundle.metadata["preset"] == "features"
    assert m["test_rmse"] <= 0.91
    assert set(result.bundle.metadata["features"]) == {"user", "item"}
