"""Parquet objects stream from the S3 server: memory bounded by a row group, not the object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.scoring.discover import discover_inputs
from batchrank.scoring.reader import iter_chunks

GROUPS, ROWS = 16, 40_000


def test_a_parquet_object_is_read_one_row_group_at_a_time(
    s3_server: Any, s3: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    local = tmp_path / "p.parquet"
    columns = ("user_id", "movie_id", "payload")
    data = {c: rng.integers(0, 2**62, GROUPS * ROWS) for c in columns}  # incompressible
    pq.write_table(pa.table(data), local, row_group_size=ROWS, compression="none")
    s3_server.upload(local, f"{s3}/cands/p.parquet")
    meta = pq.ParquetFile(local).metadata
    ids_per_group = sum(meta.row_group(0).column(i).total_compressed_size for i in (0, 1))

    files = discover_inputs([f"{s3}/cands/p.parquet"])
    before = pa.total_allocated_bytes()
    peak, rows = 0, 0
    for chunk in iter_chunks(files, user_col="user_id", item_col="movie_id", chunk_rows=ROWS):
        peak = max(peak, pa.total_allocated_bytes() - before)
        rows += chunk.table.num_rows
        del chunk
    assert rows == GROUPS * ROWS
    # Arrow's buffers held at any time: a row group's id columns, its decoded batch and the
    # chunk cut from it; not every row group's (pre-buffering all of them before the first
    # batch held the whole object's id columns: over GROUPS times a row group's)
    assert peak < 5 * ids_per_group
