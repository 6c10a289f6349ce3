"""The measured variants, each run in its own process: ``python -m batchrank.bench.variants``.

Usage (the benchmark's runner starts these; they are not meant to be typed)::

    python -m batchrank.bench.variants ceiling   --model M --pairs P [--sweep 1024,4096]
    python -m batchrank.bench.variants naive     --model M --pairs P --movies T --out O
    python -m batchrank.bench.variants batchrank --model M --pairs P --movies T --out O

Each variant imports what it needs (Keras, JAX, polars: not timed), then times only its work
(model loading included for ``naive`` and ``batchrank``, as is compilation for ``batchrank``;
compilation excluded for ``ceiling``), and prints one line
``BATCHRANK_BENCH {json}`` on stdout with its figures, its own peak RSS
(``getrusage(RUSAGE_SELF)``) and the JAX backend it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from batchrank.bench import BATCHRANK_VARIANTS

__all__ = ["MARKER", "SWEEP", "main", "peak_rss_bytes", "run_batchrank", "run_ceiling", "run_naive"]

MARKER = "BATCHRANK_BENCH "
"""Prefix of the one stdout line that carries a variant's JSON report."""
SWEEP = (512, 1024, 2048, 4096, 8192, 16384, 65536)
"""Batch sizes the ceiling tries."""
DEFAULT_SWEEP_PAIRS = 1_000_000
"""Pairs each batch size of the sweep is timed on (the best then runs over every pair)."""
NAIVE_BATCH_SIZE = 1000
"""The tutorial's ``model.predict`` batch size."""


def peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident set size from ``getrusage`` in bytes (Linux reports KiB, macOS bytes)."""
    peak = int(resource.getrusage(who).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024


def _machine() -> dict[str, Any]:
    import jax

    return {
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_version": jax.__version__,
    }


def _index_pairs(bundle: Any, pairs: Path) -> tuple[Any, Any]:
    """Read a pairs file and map its ids to vocabulary indices (int32 arrays)."""
    import pyarrow.parquet as pq

    table = pq.read_table(pairs, columns=["user_id", "movie_id"])
    u = bundle.users.lookup(table.column("user_id").combine_chunks())
    i = bundle.items.lookup(table.column("movie_id").combine_chunks())
    return u, i


def _timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, float]:
    """Best wall time of ``repeats`` calls of ``fn``, and the process CPU time of that call."""
    best, cpu = float("inf"), 0.0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return best, cpu


def _ceiling_path(
    bundle: Any,
    u: Any,
    i: Any,
    *,
    fold: bool,
    sweep: Sequence[int],
    sweep_pairs: int,
    batch_size: int,
) -> dict[str, Any]:
    """Sweep batch sizes on a sample, then time ``batch_size`` (batchrank's) over every pair.

    The ceiling's headline is at batchrank's own batch size, so the ratio compares the same
    jitted function at the same shapes; the sweep shows what another batch size would give.
    """
    from batchrank.scoring.predict import make_predictor

    n = len(u)
    m = min(n, sweep_pairs)
    rows = []
    for b in sweep:
        pred = make_predictor(bundle, batch_size=b, fold=fold)
        pred.predict(u[: pred.batch_size], i[: pred.batch_size])  # compile
        secs, _ = _timed(partial(pred.predict, u[:m], i[:m]), repeats=2)
        rows.append({"batch_size": pred.batch_size, "pairs_per_s": m / secs, "seconds": secs})
    best = max(rows, key=lambda r: r["pairs_per_s"])
    pred = make_predictor(bundle, batch_size=batch_size, fold=fold)
    pred.predict(u[: pred.batch_size], i[: pred.batch_size])
    secs, cpu = _timed(partial(pred.predict, u, i))
    return {
        "pairs": n,
        "pairs_per_s": n / secs,
        "wall_s": secs,
        "cpu_s": cpu,
        "batch_size": pred.batch_size,
        "best_sweep_batch_size": best["batch_size"],
        "path": pred.path,
        "sweep_pairs": m,
        "sweep": rows,
    }


def run_ceiling(
    model: Path,
    pairs: Path,
    *,
    sweep: Sequence[int] = SWEEP,
    sweep_pairs: int = DEFAULT_SWEEP_PAIRS,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The model as one jitted function over index pairs in memory: no I/O, no top-k.

    Args:
        model: bundle folder.
        pairs: pairs file, read and mapped to indices before any timing.
        sweep: batch sizes to try.
        sweep_pairs: pairs each batch size is timed on.
        batch_size: the batch size timed over every pair (None: the scorer's default).

    Returns:
        ``unfolded`` (the generic ``stateless_call`` path) and ``folded`` figures, each at
        ``batch_size``, with the sweep.
    """
    from batchrank.bundle import load_bundle
    from batchrank.scoring.predict import DEFAULT_BATCH_SIZE

    b = DEFAULT_BATCH_SIZE if batch_size is None else batch_size

    bundle = load_bundle(model)
    u, i = _index_pairs(bundle, pairs)
    return {
        "unfolded": _ceiling_path(
            bundle, u, i, fold=False, sweep=sweep, sweep_pairs=sweep_pairs, batch_size=b
        ),
        "folded": _ceiling_path(
            bundle, u, i, fold=True, sweep=sweep, sweep_pairs=sweep_pairs, batch_size=b
        ),
    }


def _preload(keras: bool) -> float:
    """Import what the variant runs before any timing; return the seconds it took.

    ``batchrank score`` never imports Keras (a bundle's arrays are enough), so its variants
    import only JAX and the scorer: importing Keras there would add about 240 MiB to the
    peak RSS measured for a process that does not load it.
    """
    t0 = time.perf_counter()
    if keras:
        import batchrank.model  # imports keras and jax
    import jax  # noqa: F401

    import batchrank.scoring.api  # noqa: F401

    return time.perf_counter() - t0


def run_naive(model: Path, pairs: Path, movies: Path, out: Path, *, top_k: int) -> dict[str, Any]:
    """What a user writes from the tutorial: everything in memory, ``model.predict``, sort.

    Reads the whole pairs file with polars, maps ids with the bundle's vocabularies, predicts
    with ``model.predict(..., batch_size=1000)``, sorts, drops repeated pairs (past one full
    cross join the input repeats pairs, and without this a list would repeat its best movie),
    keeps ``top_k`` per user, joins the titles and writes Parquet. No validation. Timed from
    loading the model to the written file (imports excluded, as for ``batchrank``).

    Args:
        model: bundle folder.
        pairs: pairs file.
        movies: titles file (``movie_id``, ``title``).
        out: output Parquet file.
        top_k: rows kept per user.
    """
    import numpy as np
    import polars as pl

    from batchrank.bundle import load_bundle

    import_s = _preload(keras=True)
    stages: dict[str, float] = {}
    t0 = last = time.perf_counter()
    c0 = time.process_time()

    def lap(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        stages[name] = now - last
        last = now

    bundle = load_bundle(model)
    lap("load_model_s")
    df = pl.read_parquet(pairs)
    lap("read_s")
    users = bundle.users.ids.to_numpy()
    items = bundle.items.ids.to_numpy()
    u = (
        df.get_column("user_id")
        .replace_strict(users, np.arange(1, len(users) + 1, dtype=np.int32), default=0)
        .to_numpy()
    )
    i = (
        df.get_column("movie_id")
        .replace_strict(items, np.arange(1, len(items) + 1, dtype=np.int32), default=0)
        .to_numpy()
    )
    lap("map_ids_s")
    score = bundle.model.predict({"user": u, "item": i}, batch_size=NAIVE_BATCH_SIZE, verbose=0)
    t = bundle.transform
    score = np.asarray(score, dtype=np.float32)[:, 0]
    stars = np.clip(t.low + (t.high - t.low) * score, 0.0, t.high).astype(np.float32)
    lap("predict_s")
    top = (
        df.with_columns(score=pl.Series(score), stars=pl.Series(stars))
        .sort(["user_id", "score", "movie_id"], descending=[False, True, False])
        .unique(["user_id", "movie_id"], keep="first", maintain_order=True)
        .group_by("user_id", maintain_order=True)
        .head(top_k)
        .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("user_id"))
        .join(pl.read_parquet(movies), on="movie_id", how="left")
        .select("user_id", "rank", "movie_id", "title", "stars", "score")
    )
    lap("topk_s")
    top.write_parquet(out)
    lap("write_s")
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = df.height
    return {
        "pairs": n,
        "pairs_per_s": n / secs,
        "wall_s": secs,
        "cpu_s": cpu,
        "rows_written": top.height,
        "import_s": import_s,
        "timings_s": {k: round(v, 3) for k, v in stages.items()},
    }


def run_batchrank(
    model: Path,
    pairs: Path,
    movies: Path,
    out: Path,
    *,
    top_k: int,
    batch_size: int | None,
    chunk_rows: int | None,
    score_table: str = "auto",
    cross_join: bool = False,
    precision: str = "float32",
) -> dict[str, Any]:
    """``batchrank.score`` end to end on the pairs file (or ``--pairs all``).

    Args:
        model: bundle folder.
        pairs: pairs file.
        movies: titles file.
        out: output Parquet file.
        top_k: rows kept per user.
        batch_size: rows per jitted call (None: the scorer's default).
        chunk_rows: rows read at a time (None: the scorer's default).
        score_table: ``auto`` or ``never`` (the dense score table, see ScoreSpec).
        cross_join: score ``--pairs all`` (every user × every movie) instead of ``pairs``.
        precision: ``float32`` or ``bfloat16`` (see ScoreSpec).
    """
    from batchrank.scoring.api import score

    import_s = _preload(keras=False)
    options: dict[str, Any] = {}
    if batch_size is not None:
        options["batch_size"] = batch_size
    if chunk_rows is not None:
        options["chunk_rows"] = chunk_rows
    if precision != "float32":
        options["precision"] = precision
    t0, c0 = time.perf_counter(), time.process_time()
    manifest = score(
        model=model,
        pairs=["all"] if cross_join else [str(pairs)],
        out=out,
        items=movies,
        top_k=top_k,
        progress="none",
        score_table=score_table,
        **options,
    )
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = int(manifest["counts"]["rows_read"])
    return {
        "pairs": n,
        "pairs_per_s": n / secs,
        "wall_s": secs,
        "cpu_s": cpu,
        "rows_written": manifest["counts"]["rows_written"],
        "rows_scored": manifest["counts"]["rows_scored"],
        "batch_size": manifest["options"]["batch_size"],
        "chunk_rows": manifest["options"]["chunk_rows"],
        "timings_s": manifest["timings_s"],
        "import_s": import_s,
        "predictor": manifest.get("predictor"),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m batchrank.bench.variants")
    p.add_argument("variant", choices=["ceiling", "naive", *BATCHRANK_VARIANTS])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--movies", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--chunk-rows", type=int)
    p.add_argument("--sweep", default=",".join(str(b) for b in SWEEP))
    p.add_argument("--sweep-pairs", type=int, default=DEFAULT_SWEEP_PAIRS)
    p.add_argument("--cross-join", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one variant and print its ``BATCHRANK_BENCH`` JSON line."""
    args = _parser().parse_args(argv)
    if args.variant == "ceiling":
        sweep = [int(b) for b in args.sweep.split(",") if b.strip()]
        if args.batch_size is not None:
            sweep = sorted({*sweep, args.batch_size})
        report = run_ceiling(
            args.model,
            args.pairs,
            sweep=sweep,
            sweep_pairs=args.sweep_pairs,
            batch_size=args.batch_size,
        )
    elif args.variant == "naive":
        report = run_naive(args.model, args.pairs, args.movies, args.out, top_k=args.top_k)
    else:
        report = run_batchrank(
            args.model,
            args.pairs,
            args.movies,
            args.out,
            top_k=args.top_k,
            batch_size=args.batch_size,
            chunk_rows=args.chunk_rows,
            score_table="never" if args.variant == "batchrank_no_table" else "auto",
            cross_join=args.cross_join,
            precision="bfloat16" if args.variant == "batchrank_bf16" else "float32",
        )
    report.update(
        variant=args.variant,
        self_peak_rss_bytes=peak_rss_bytes(),
        machine=_machine(),
        pid=os.getpid(),
    )
    sys.stdout.write(MARKER + json.dumps(report, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
