"""Hostile: rankings must follow the raw score, never the clipped stars.

Stars are clipped to the rating scale, so items predicted above its top all show 5.00; ranking on
stars would order them by movie id (a wrong list with exit code 0).
"""

from __future__ import annotations

import pyarrow as pa

from batchrank.scoring.ranking import partial_topk
from batchrank.scoring.topk import TopK


def _clipped_rows() -> pa.Table:
    # Scores above 1.0 label units all clip to 5 stars; ids are in the opposite order.
    return pa.table(
        {
            "user_id": pa.array([7, 7, 7, 7], pa.int64()),
            "movie_id": pa.array([1, 2, 3, 4], pa.int64()),
            "score": pa.array([1.01, 1.02, 1.064, 0.9], pa.float32()),
            "stars": pa.array([5.0, 5.0, 5.0, 4.6], pa.float32()),
        }
    )


def test_partial_topk_ranks_clipped_items_by_raw_score() -> None:
    part = partial_topk(_clipped_rows(), 2)
    assert part.column("movie_id").to_pylist() == [3, 2]


def test_streaming_topk_ranks_clipped_items_by_raw_score() -> None:
    tk = TopK(3, user_type=pa.int64(), item_type=pa.int64(), memory_budget_bytes=1 << 20)
    rows = _clipped_rows()
    for i in range(rows.num_rows):  # one row at a time exercises the pruning threshold
        tk.add(rows.slice(i, 1))
    (out,) = list(tk.results())
    tk.close()
    assert out.column("movie_id").to_pylist() == [3, 2, 1]
    assert out.column("rank").to_pylist() == [1, 2, 3]


def test_ties_on_raw_score_break_by_movie_id() -> None:
    table = pa.table(
        {
            "user_id": pa.array([1, 1, 1], pa.int64()),
            "movie_id": pa.array([9, 4, 6], pa.int64()),
            "score": pa.array([1.5, 1.5, 1.5], pa.float32()),
            "stars": pa.array([5.0, 5.0, 5.0], pa.float32()),
        }
    )
    assert partial_topk(table, 3).column("movie_id").to_pylist() == [4, 6, 9]


def test_end_to_end_a_model_predicting_beyond_the_scale_ranks_by_raw_score(
    sample_bundle, tmp_path
) -> None:
    """A bundle whose predictions overshoot the top of the scale: many items show 5.00 stars;
    their order must follow the raw score (before the fix it followed the movie id)."""
    from pathlib import Path

    import numpy as np
    import polars as pl

    from batchrank.bundle import load_bundle
    from batchrank.cli.main import main

    bundle = load_bundle(sample_bundle)
    kernel, bias = bundle.model.output_layer.get_weights()
    bundle.model.output_layer.set_weights([kernel, bias + np.float32(0.6)])
    hot = bundle.save(tmp_path / "overshoot")
    out = tmp_path / "top.parquet"
    cands = Path(__file__).resolve().parents[2] / "sample_data" / "candidates.parquet"
    try:
        main(["score", "--model", str(hot), "--pairs", str(cands), "--out", str(out), "--quiet"])
    except SystemExit as e:
        assert e.code in (0, None)
    top = pl.read_parquet(out)
    clipped = top.filter(pl.col("stars") == 5.0).group_by("user_id").len()
    assert clipped.filter(pl.col("len") >= 2).height > 0, "the test needs ties at 5.00 stars"
    expected = top.sort(["user_id", "score", "movie_id"], descending=[False, True, False])
    assert top.select("user_id", "movie_id").equals(expected.select("user_id", "movie_id"))
