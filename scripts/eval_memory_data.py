"""Synthetic inputs for measuring ``batchrank evaluate --ranking``'s memory at U users.

    python scripts/eval_memory_data.py 1000000 build/evalmem

Writes, under DIR: the bench's seed-preset bundle widened to U users over a 50,000-movie
catalogue (``batchrank.bench.bundle.ensure_workload_bundle``, cached by name) and, in
``DIR/uU/``, from 130 distinct movies per user (``batchrank.bench.workload.draw_candidates``):
``train.parquet`` (20 pairs a user), ``heldout.parquet`` (100 ratings of 1-5 stars a user)
and ``top10.parquet`` (a top-10 export), written block by block. docs/evaluation.md ("Cost")
has the measurement.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchrank.bench.bundle import ensure_workload_bundle
from batchrank.bench.workload import Workload, draw_candidates

TRAIN, HELD, TOP = 20, 100, 10
MOVIES = 50_000


def main(users: int, root: Path) -> None:
    per = TRAIN + HELD + TOP
    w = Workload("grouped", users * per, users, MOVIES, per)
    root.mkdir(parents=True, exist_ok=True)
    print("bundle:", ensure_workload_bundle(root, w, say=print), flush=True)
    out = root / f"u{users}"
    out.mkdir(exist_ok=True)
    ids = [("user_id", pa.int64()), ("movie_id", pa.int64())]
    schemas = {
        "train": pa.schema(ids),
        "heldout": pa.schema([*ids, ("rating", pa.float64())]),
        "top10": pa.schema([*ids, ("rank", pa.int32())]),
    }
    writers = {k: pq.ParquetWriter(out / f"{k}.parquet", s) for k, s in schemas.items()}
    rng = np.random.default_rng(7)
    for u, m in draw_candidates(w, seed=0):
        n = len(u) // per
        u, m = u.reshape(n, per), m.reshape(n, per)
        parts = {"train": slice(0, TRAIN), "heldout": slice(TRAIN, TRAIN + HELD)}
        parts["top10"] = slice(TRAIN + HELD, per)
        cols = {
            k: {"user_id": u[:, s].ravel(), "movie_id": m[:, s].ravel()} for k, s in parts.items()
        }
        cols["heldout"]["rating"] = rng.integers(1, 6, size=n * HELD).astype(np.float64)
        cols["top10"]["rank"] = np.tile(np.arange(1, TOP + 1, dtype=np.int32), n)
        for k, c in cols.items():
            writers[k].write_table(pa.table(c, schema=schemas[k]))
    for writer in writers.values():
        writer.close()
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
