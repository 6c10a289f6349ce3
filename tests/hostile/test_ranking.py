"""Hostile: rankings must follow the raw score, never the clipped stars.

Stars are clipped to the rating scale, so items predicted above its top all show 5.00; ranking on
stars would order them by movie id (a wrong list with exit code 0).
"""

from __future__ import annotations

import pyarrow as pa

from batchrank.scoring.topk import TopK, partial_topk


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
