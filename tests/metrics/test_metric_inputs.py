"""The evaluation's streamed inputs: ratings chunks with the file's row numbers, range spills."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from batchrank.errors import DataError
from batchrank.metrics.inputs import iter_ratings
from batchrank.metrics.spill import RangeSpill
from batchrank.sources import Columns


def test_a_bad_rating_deep_in_a_csv_is_named_by_its_file_row(tmp_path: Path) -> None:
    n = 150_000  # > one 1 MiB block of Arrow's streaming reader
    rating = np.full(n, "4", dtype=object)
    rating[120_000 - 1] = "x"
    path = tmp_path / "test.csv"
    pl.DataFrame(
        {"user_id": np.arange(n) % 97, "movie_id": np.arange(n), "rating": rating}
    ).write_csv(path)
    chunks = iter_ratings(path, Columns(), 1 << 20)
    with pytest.raises(DataError, match=r"row 120000 has 'x'"):
        for _ in chunks:
            pass


def test_parquet_ratings_stream_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pl.DataFrame(
        {"u": [1, 2, 3, 4, 5], "m": [9, 8, 7, 6, 5], "stars": [1, 2, 3, 4, 5]}
    ).write_parquet(path)
    columns = Columns(user="u", item="m", rating="stars")
    chunks = list(iter_ratings(path, columns, 2))
    assert [c.num_rows for c in chunks] == [2, 2, 1]
    assert chunks[2].column("rating").to_pylist() == [5.0]
    with pytest.raises(DataError, match="column `rating` missing"):
        list(iter_ratings(path, Columns(user="u", item="m"), 2))


@pytest.mark.parametrize("flush", [16, 1 << 30])
def test_range_spill_keeps_arrival_order_per_range(tmp_path: Path, flush: int) -> None:
    spill = RangeSpill(tmp_path / "s", 2, chunk_users=3, flush_bytes=flush)
    spill.add(np.array([7, 1, 4, 1]), np.array([0, 1, 2, 3]))
    spill.add(np.array([2, 8, 0]), np.array([4, 5, 6]))
    got = {r: rows.tolist() for r, rows in spill}
    assert got == {0: [[1, 1], [1, 3], [2, 4], [0, 6]], 1: [[4, 2]], 2: [[7, 0], [8, 5]]}
    if flush == 16:  # spilled: each range file is removed once read
        assert spill.spilled and not list(spill.folder.iterdir())
    else:
        assert not spill.spilled and not spill.folder.exists()
