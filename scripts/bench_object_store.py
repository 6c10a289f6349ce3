"""Scoring N pairs read from a local S3 server (moto) vs the same file on local disk.

    python scripts/bench_object_store.py --model build/models/sample --pairs 20000000

Writes one Parquet file of N random (user, movie) pairs from the bundle's vocabularies, uploads
it to moto's S3 server started on 127.0.0.1 (``moto[server]``, the dev extra), then runs
``batchrank score`` on the local file (local --out) and on the S3 object (S3 --out), each in a
fresh process, and prints wall time, pairs/s, their ratio and each run's peak RSS (from the
child's rusage). The outputs must be byte-identical; the script fails otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.s3server import MotoS3, use_env


def _run(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of ``batchrank ARGS`` in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "batchrank.cli.main", *args])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"batchrank {' '.join(args)} failed ({status})")
    return wall, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    opts = parser.parse_args()
    users = pq.read_table(opts.model / "users.parquet", columns=["user_id"]).column(0)
    items = pq.read_table(opts.model / "items.parquet", columns=["movie_id"]).column(0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, MotoS3() as server:
        folder = Path(tmp)
        table = pa.table({
            "user_id": users.take(pa.array(rng.integers(0, len(users), opts.pairs))),
            "movie_id": items.take(pa.array(rng.integers(0, len(items), opts.pairs))),
        })  # fmt: skip
        pq.write_table(table, folder / "pairs.parquet", row_group_size=1 << 20)
        with contextlib.contextmanager(use_env)(
            {**server.env, "BATCHRANK_CACHE_DIR": str(folder / "cache")}
        ):
            bucket = f"s3://{server.bucket()}"
            server.upload(folder / "pairs.parquet", f"{bucket}/cands/pairs.parquet")
            server.upload(opts.model, f"{bucket}/models/m")
            local_wall, local_rss = _run([
                "score", "--model", str(opts.model), "--pairs", str(folder / "pairs.parquet"),
                "--out", str(folder / "top.parquet"), "--quiet",
            ])  # fmt: skip
            s3_wall, s3_rss = _run([
                "score", "--model", f"{bucket}/models/m", "--pairs",
                f"{bucket}/cands/pairs.parquet", "--out", f"{bucket}/out/top.parquet", "--quiet",
            ])  # fmt: skip
            same = server.get(f"{bucket}/out/top.parquet") == (folder / "top.parquet").read_bytes()
    n = opts.pairs
    print(f"pairs: {n:,}")
    for name, wall, rss in (("local disk", local_wall, local_rss), ("S3 (moto)", s3_wall, s3_rss)):
        print(f"{name}: {wall:.1f} s, {n / wall:,.0f} pairs/s, peak RSS {rss / 1024:.0f} MiB")
    print(f"ratio (S3 / local pairs/s): {local_wall / s3_wall:.2f}; outputs identical: {same}")
    if not same:
        raise SystemExit("outputs differ")


if __name__ == "__main__":
    main()
