"""Scoring N pairs read from a local S3 server (moto) vs the same file on local disk.

    python scripts/bench_object_store.py --pairs 20000000

The input is ``batchrank bench``'s realistic workload (:mod:`batchrank.bench.workload`): U =
pairs / 100 users, each with 100 distinct candidates from a 50,000-movie catalogue, no
(user, movie) pair repeated, rows grouped by user (``--scenario shuffled``: rows shuffled);
the model is that workload's seed-preset bundle (:mod:`batchrank.bench.bundle`). Both are
cached in ``--work-dir``. The script uploads the pairs file and the bundle to moto's S3 server
started in this process on 127.0.0.1 (``moto[server]``, the dev extra), then, for each round,
runs ``batchrank score`` on the local file (local bundle, local --out) and on the S3 object (S3
bundle, S3 --out), each in a fresh process under a small launcher (:mod:`batchrank.bench.process`:
peak RSS and CPU of that command alone). It prints per run wall time, pairs/s, CPU seconds,
peak RSS and the CPU this process (the S3 server) spent meanwhile; then the ratios, with the
load average. The outputs must be byte-identical; the script fails otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchrank.bench import DEFAULT_CANDIDATES, DEFAULT_MOVIES
from batchrank.bench.bundle import ensure_workload_bundle
from batchrank.bench.process import ChildRun, spawn, tail
from batchrank.bench.workload import ensure_workload_pairs, workload
from tests.s3server import MotoS3, use_env


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _score(args: list[str], log: Path) -> tuple[ChildRun, float]:
    """``batchrank score ARGS`` in a fresh process; its run and this process's CPU meanwhile."""
    before = _self_cpu()
    run = spawn(
        [sys.executable, "-m", "batchrank.cli.main", "score", *args, "--quiet"], log_prefix=log
    )
    server_cpu = _self_cpu() - before
    if run.returncode != 0:
        raise SystemExit(
            f"batchrank score {' '.join(args)} failed ({run.returncode}):\n{tail(run.stderr)}"
        )
    return run, server_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--scenario", choices=("grouped", "shuffled"), default="grouped")
    parser.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    parser.add_argument("--movies", type=int, default=DEFAULT_MOVIES)
    parser.add_argument("--rounds", type=int, default=1, help="local, S3 pairs of runs")
    parser.add_argument("--work-dir", type=Path, default=Path("build/bench-object-store"))
    opts = parser.parse_args()
    w = workload(opts.scenario, opts.pairs, candidates=opts.candidates, movies=opts.movies)
    opts.work_dir.mkdir(parents=True, exist_ok=True)
    print(w.describe(), flush=True)
    pairs = ensure_workload_pairs(opts.work_dir, w)
    model = ensure_workload_bundle(opts.work_dir, w, say=lambda m: print(m, flush=True))
    size = pairs.stat().st_size / 2**20
    print(f"pairs file: {size:.0f} MiB; load average before: {os.getloadavg()}")
    runs: dict[str, list[tuple[ChildRun, float]]] = {"local disk": [], "S3 (moto)": []}
    with tempfile.TemporaryDirectory() as tmp, MotoS3() as server:
        folder = Path(tmp)
        env = {**server.env, "BATCHRANK_CACHE_DIR": str(folder / "cache")}
        with contextlib.contextmanager(use_env)(env):
            bucket = f"s3://{server.bucket()}"
            server.upload(pairs, f"{bucket}/cands/pairs.parquet")
            server.upload(model, f"{bucket}/models/m")
            for r in range(opts.rounds):
                local_out, s3_out = folder / f"top-{r}.parquet", f"{bucket}/out/{r}/top.parquet"
                runs["local disk"].append(_score(
                    ["--model", str(model), "--pairs", str(pairs), "--out", str(local_out)],
                    folder / f"local-{r}",
                ))  # fmt: skip
                runs["S3 (moto)"].append(_score(
                    ["--model", f"{bucket}/models/m", "--pairs", f"{bucket}/cands/pairs.parquet",
                     "--out", s3_out],
                    folder / f"s3-{r}",
                ))  # fmt: skip
                if server.get(s3_out) != local_out.read_bytes():
                    raise SystemExit(f"round {r}: the S3 output differs from the local one")
    n = w.pairs
    print(f"pairs: {n:,}; outputs byte-identical in every round")
    ratios = []
    for r in range(opts.rounds):
        for name, rs in runs.items():
            run, server_cpu = rs[r]
            print(
                f"round {r} {name}: {run.wall_s:.1f} s, {n / run.wall_s:,.0f} pairs/s, "
                f"CPU {run.cpu_s or 0:.1f} s, peak RSS {run.peak_rss_bytes / 2**20:,.0f} MiB; "
                f"S3 server CPU meanwhile {server_cpu:.1f} s"
            )
        (loc, _), (s3, server_cpu) = runs["local disk"][r], runs["S3 (moto)"][r]
        ratios.append((
            loc.wall_s / s3.wall_s,
            (loc.cpu_s or 0) / max((s3.cpu_s or 0) + server_cpu, 1e-9),
            s3.peak_rss_bytes / max(loc.peak_rss_bytes, 1),
        ))  # fmt: skip
        print(
            f"round {r}: S3 / local pairs/s {ratios[-1][0]:.2f}; pairs per CPU second "
            f"(S3 server's CPU included) {ratios[-1][1]:.2f}; peak RSS {ratios[-1][2]:.3f}"
        )
    med = [float(np.median([x[i] for x in ratios])) for i in range(3)]
    print(
        f"median of {opts.rounds} rounds: pairs/s {med[0]:.2f}, pairs per CPU second "
        f"{med[1]:.2f}, peak RSS {med[2]:.3f}"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
