"""``--precision bfloat16``: opt-in, close to float32, recorded; float32 stays the default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from batchrank.bundle import load_bundle
from batchrank.errors import ModelError
from batchrank.scoring.api import score
from batchrank.scoring.predict import make_predictor
from batchrank.scoring.spec import ScoreSpec

PAIRS = "sample_data/candidates.parquet"


def test_float32_is_the_default() -> None:
    assert ScoreSpec.from_options(model="m", pairs=[PAIRS], out="o.parquet").precision == "float32"


def test_bfloat16_scores_stay_close_to_float32(sample_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(sample_bundle, model=False)
    rng = np.random.default_rng(0)
    u = rng.integers(0, bundle.users.size, 5000).astype(np.int32)
    i = rng.integers(0, bundle.items.size, 5000).astype(np.int32)
    exact = make_predictor(bundle, batch_size=1024)
    low = make_predictor(bundle, batch_size=1024, precision="bfloat16")
    assert (exact.path, low.path) == ("folded", "folded+bf16")
    (s32, st32), (s16, st16) = exact.predict(u, i), low.predict(u, i)
    assert s16.dtype == np.float32 and st16.dtype == np.float32
    assert not np.array_equal(s32, s16)  # it really ran in bfloat16
    assert float(np.max(np.abs(st32 - st16))) < 0.05  # stars, 1-5 scale

    outs = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / f"{precision}.parquet"
        m = score(model=sample_bundle, pairs=[PAIRS], out=out, progress="none", precision=precision)
        assert m["options"]["precision"] == precision
        assert m["predictor"].endswith("+bf16") == (precision == "bfloat16")
        outs[precision] = pl.read_parquet(out)
    a, b = outs["float32"], outs["bfloat16"]
    assert a.select("user_id").unique().height == b.select("user_id").unique().height
    both = a.join(b, on=["user_id", "movie_id"], suffix="_b")
    assert both.height >= 0.8 * a.height  # mostly the same lists
    assert float((both["stars"] - both["stars_b"]).abs().max()) < 0.05


def test_bfloat16_needs_the_folded_model(sample_bundle: Path) -> None:
    bundle = load_bundle(sample_bundle, model=False)
    with pytest.raises(ModelError, match="--precision bfloat16 needs a batchrank RankingModel"):
        make_predictor(bundle, fold=False, precision="bfloat16")


def test_round_bf16_matches_convert() -> None:
    """The integer rounding gives the bits of ``astype(bfloat16)`` (ties, tiny, huge, NaN)."""
    import jax.numpy as jnp

    from batchrank.scoring.predict import _round_bf16

    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            rng.standard_normal(100_000).astype(np.float32)
            * 10.0 ** rng.integers(-30, 30, 100_000),
            np.array(
                [0.0, -0.0, 1.00390625, 1.01171875, 3.4e38, -3.4e38, 1e-40, np.nan], np.float32
            ),
            np.array([np.inf, -np.inf], np.float32),
        ]
    ).astype(np.float32)
    got = np.asarray(_round_bf16(jnp.asarray(x))).view(np.uint16)
    want = np.asarray(jnp.asarray(x).astype(jnp.bfloat16)).view(np.uint16)
    np.testing.assert_array_equal(got, want)
