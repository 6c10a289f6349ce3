"""Fixtures of the hostile-input corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(scope="session")
def sample_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed-preset bundle trained for two epochs on sample_data/ (titles included)."""
    from batchrank.training import train

    out = tmp_path_factory.mktemp("sample-bundle") / "model"
    train(
        SAMPLE / "ratings.parquet",
        out,
        preset="seed",
        items=SAMPLE / "movies.parquet",
        epochs=2,
        verbose=0,
    )
    return out
