"""A user table too large to fold is projected once per run of equal users (BlockPredictor):
the scores are the same bits however the pairs are grouped, ordered, chunked or batched, the
same bits as projecting every pair, and equal to the folded table's to float rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchrank.bundle import load_bundle
from batchrank.scoring.predict import BlockPredictor, Predictor, make_predictor


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    """Runs of 1 to 40 candidates per user (grouped, as a retrieval job writes them), then a
    shuffled stretch: both branches of the block predictor."""
    rng = np.random.default_rng(7)
    runs = rng.integers(1, 41, 600)
    u = np.repeat(rng.integers(0, 301, len(runs)), runs).astype(np.int32)  # 0: the OOV row
    tail = rng.integers(0, 301, 5000).astype(np.int32)
    u = np.concatenate([u, tail])
    i = rng.integers(0, 201, len(u)).astype(np.int32)
    return u, i


def _predictors(bundle_path: Path, batch_size: int) -> tuple[BlockPredictor, Predictor]:
    bundle = load_bundle(bundle_path, model=False)
    block = make_predictor(bundle, batch_size=batch_size, fold_budget_bytes=0)
    assert isinstance(block, BlockPredictor) and block.path == "folded"
    return block, make_predictor(bundle, batch_size=batch_size)


def test_block_scores_match_the_folded_table(
    sample_bundle: Path, pairs: tuple[np.ndarray, np.ndarray]
) -> None:
    u, i = pairs
    block, folded = _predictors(sample_bundle, 1024)
    np.testing.assert_allclose(block.predict(u, i)[0], folded.predict(u, i)[0], atol=1e-5)


@pytest.mark.parametrize("batch_size", [64, 640, 8192])
def test_block_scores_do_not_depend_on_order_chunks_or_batches(
    sample_bundle: Path, pairs: tuple[np.ndarray, np.ndarray], batch_size: int
) -> None:
    u, i = pairs
    ref_block, _ = _predictors(sample_bundle, 128)
    ref = ref_block.predict(u, i)
    block, _ = _predictors(sample_bundle, batch_size)
    per_pair = Predictor(fn=block.fn, batch_size=block.batch_size, path="", device="")
    for got in (block.predict(u, i), per_pair.predict(u, i)):
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
    perm = np.random.default_rng(batch_size).permutation(len(u))
    shuffled = block.predict(u[perm], i[perm])
    assert np.array_equal(shuffled[0], ref[0][perm])
    cut = len(u) // 3 + 17  # chunk boundaries inside runs
    chunks = [block.predict(u[a:b], i[a:b])[0] for a, b in ((0, cut), (cut, len(u)))]
    assert np.array_equal(np.concatenate(chunks), ref[0])
