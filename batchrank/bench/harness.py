"""Running the benchmark: inputs, the model, then each variant in its own child process.

Each variant's peak RSS is the OS's accounting of that process alone (see
:mod:`batchrank.bench.process`); each variant also reports its own ``getrusage(RUSAGE_SELF)``,
kept in the JSON as a cross-check.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from batchrank.bench import BATCHRANK_VARIANTS, VARIANTS
from batchrank.bench.agreement import precision_agreement, topk_agreement
from batchrank.bench.bundle import ensure_workload_bundle, workload_titles
from batchrank.bench.data import N_MOVIES, N_USERS, ensure_catalogue, ensure_pairs
from batchrank.bench.process import spawn, tail
from batchrank.bench.variants import MARKER, SWEEP, peak_rss_bytes
from batchrank.bench.workload import (
    DEFAULT_CANDIDATES,
    DEFAULT_MOVIES,
    SCENARIOS,
    Workload,
    ensure_workload_pairs,
    workload,
)
from batchrank.errors import BatchrankError, ConfigError
from batchrank.scoring.commit import manifest_path_of
from batchrank.storage import atomic_file

__all__ = ["BenchError", "BenchOptions", "run_bench"]

STARTUP_PAIRS = 1000
"""Pairs of the cold-start scoring run."""
HELP_RUNS = 3
"""``batchrank --help`` runs; the median is reported."""
MIB = 1 << 20


class BenchError(BatchrankError):
    """A variant's child process failed."""

    exit_code = 1


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What ``batchrank bench`` was asked to do."""

    pairs: int = 5_000_000
    """Pairs in the synthetic input (``all``: ignored, the cross join)."""
    scenarios: tuple[str, ...] = ("grouped", "shuffled")
    """Scenarios to run, in order (:mod:`batchrank.bench.workload`)."""
    candidates: int = DEFAULT_CANDIDATES
    """Candidates per user of the realistic scenarios."""
    movies: int = DEFAULT_MOVIES
    """Catalogue size of the realistic scenarios."""
    model: Path | None = None
    """Existing bundle for the ``repeated`` and ``all`` scenarios (None: train one)."""
    ratings: Path | None = None
    """Ratings to train those scenarios' ``seed`` preset on (None: synthetic ratings)."""
    top_k: int = 10
    """Rows kept per user."""
    batch_size: int | None = None
    """batchrank's batch size (None: the scorer's default); also added to the ceiling sweep."""
    chunk_rows: int | None = None
    """batchrank's chunk size (None: the scorer's default)."""
    variants: tuple[str, ...] = VARIANTS
    """Variants to run."""
    work_dir: Path | None = None
    """Work folder (None: a temporary one)."""
    keep: bool = False
    """Keep the temporary work folder and the outputs."""
    seed: int = 0
    """Seed of the synthetic data."""
    sweep: tuple[int, ...] = SWEEP
    """Batch sizes the ceiling tries."""
    sweep_pairs: int = 1 << 18
    """Pairs each sweep point is timed on."""
    epochs: int = 1
    """Training epochs when a model is trained."""

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise ConfigError(f"--pairs must be >= 1; received {self.pairs}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ConfigError(
                f"unknown variant {', '.join(unknown) or '(none)'}; expected a comma-separated "
                f"subset of {','.join(VARIANTS)}"
            )
        if self.model is not None and self.ratings is not None:
            raise ConfigError("pass --model or --ratings, not both")
        bad = [s for s in self.scenarios if s not in SCENARIOS]
        if bad or not self.scenarios:
            raise ConfigError(
                f"unknown scenario {', '.join(bad) or '(none)'}; expected a comma-separated "
                f"subset of {','.join(SCENARIOS)}"
            )
        if not 1 <= self.candidates <= self.movies:
            raise ConfigError(
                f"--candidates must be in [1, --movies {self.movies}]; received {self.candidates}"
            )


def _run_variant(name: str, args: Sequence[str], work: Path) -> dict[str, Any]:
    """Run ``python -m batchrank.bench.variants NAME ARGS`` and return its report."""
    argv = [sys.executable, "-m", "batchrank.bench.variants", name, *args]
    run = spawn(argv, log_prefix=work / f"log-{name}")
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith(MARKER)]
    if run.returncode != 0 or not lines:
        raise BenchError(
            f"bench variant {name} failed (exit {run.returncode}):\n{tail(run.stderr)}"
        )
    report: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    report["peak_rss_bytes"] = run.peak_rss_bytes or report["self_peak_rss_bytes"]
    report["process_s"] = run.wall_s
    report["process_cpu_s"] = run.cpu_s
    return report


def batchrank_argv() -> list[str]:
    """How to start the ``batchrank`` command from this interpreter's environment."""
    script = Path(sys.executable).with_name("batchrank")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "batchrank.cli.main"]


def _run_startup(model: Path, pairs: Path, movies: Path, work: Path) -> dict[str, Any]:
    """Time ``batchrank --help`` and a cold ``batchrank score`` of a small file."""
    cmd = batchrank_argv()
    helps, help_cpu = [], []
    for n in range(HELP_RUNS):
        run = spawn([*cmd, "--help"], log_prefix=work / f"log-help-{n}")
        if run.returncode != 0:
            raise BenchError(
                f"batchrank --help failed (exit {run.returncode}):\n{tail(run.stderr)}"
            )
        helps.append(run.wall_s)
        help_cpu.append(run.cpu_s or 0.0)
    n = pq.ParquetFile(pairs).metadata.num_rows
    out = work / "out-startup.parquet"
    argv = [*cmd, "score", "--model", str(model), "--pairs", str(pairs), "--items", str(movies)]
    run = spawn([*argv, "--out", str(out), "--quiet"], log_prefix=work / "log-startup-score")
    if run.returncode != 0:
        raise BenchError(f"batchrank score failed (exit {run.returncode}):\n{tail(run.stderr)}")
    return {
        "help_s": statistics.median(helps),
        "help_runs_s": helps,
        "help_cpu_s": statistics.median(help_cpu),
        "score_pairs": n,
        "score_s": run.wall_s,
        "pairs": n,
        "pairs_per_s": n / run.wall_s,
        "wall_s": run.wall_s,
        "cpu_s": run.cpu_s,
        "peak_rss_bytes": run.peak_rss_bytes,
    }


def _digest(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _ensure_model(
    opts: BenchOptions, work: Path, movies: Path | None, say: Callable[[str], None]
) -> Path:
    """The bundle to benchmark: ``--model``, or a ``seed``-preset model trained and cached."""
    from batchrank.bundle import read_metadata

    if opts.model is not None:
        read_metadata(opts.model)
        return opts.model
    if opts.ratings is not None:
        ratings, items = opts.ratings, None
        target = work / f"model-seed-e{opts.epochs}-{_digest(ratings)}"
    else:
        cat = ensure_catalogue(work, seed=opts.seed)
        ratings, items = cat.ratings, movies
        target = work / f"model-seed-e{opts.epochs}-{cat.ratings.stem}"
    try:
        read_metadata(target)
        return target
    except BatchrankError:
        pass
    say(f"training a seed-preset model on {ratings} ({opts.epochs} epoch) into {target}")
    from batchrank.training import train

    train(ratings, target, preset="seed", items=items, epochs=opts.epochs, verbose=0)
    return target


def _coverage(model: Path) -> dict[str, float]:
    """Share of the synthetic catalogue's users and movies the model knows."""
    import numpy as np
    import pyarrow.parquet as pq

    users = pq.read_table(model / "users.parquet", columns=["user_id"]).column(0)
    items = pq.read_table(model / "items.parquet", columns=["movie_id"]).column(0)

    def share(ids: Any, n: int) -> float:
        try:
            known = np.isin(np.arange(1, n + 1), ids.to_numpy())
        except Exception:  # string ids: nothing of the catalogue is known
            return 0.0
        return float(known.mean())

    return {"users": share(users, N_USERS), "movies": share(items, N_MOVIES)}


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _scenario_inputs(
    opts: BenchOptions, w: Workload, work: Path, say: Callable[[str], None]
) -> tuple[Path, Path, Path]:
    """The pairs file, the model and the titles file of one scenario."""
    if w.realistic:
        pairs = ensure_workload_pairs(work, w, seed=opts.seed)
        model = ensure_workload_bundle(work, w, seed=opts.seed, say=say)
        return pairs, model, workload_titles(work, w.movies)
    movies = ensure_catalogue(work, seed=opts.seed).movies
    pairs = ensure_pairs(work, w.pairs, seed=opts.seed)
    model = _ensure_model(opts, work, movies, say)
    coverage = _coverage(model)
    if min(coverage.values()) < 1.0:
        say(
            f"warning: the model knows {coverage['users']:.0%} of the catalogue's users and "
            f"{coverage['movies']:.0%} of its movies; unknown pairs are skipped by batchrank "
            "and scored with the OOV row by naive"
        )
    return pairs, model, movies


def _run_scenario(
    opts: BenchOptions, w: Workload, work: Path, outputs: list[Path], say: Callable[[str], None]
) -> dict[str, Any]:
    """Every variant of ``opts`` on one scenario; their reports by name."""
    pairs, model, movies = _scenario_inputs(opts, w, work, say)
    say(w.describe())
    common = ["--model", str(model), "--pairs", str(pairs), "--top-k", str(opts.top_k)]
    tag = w.scenario
    results: dict[str, Any] = {}
    if "ceiling" in opts.variants:
        say(f"{tag} ceiling: sweeping batch sizes {list(opts.sweep)}, then {w.pairs:,} pairs")
        extra = ["--sweep", ",".join(str(b) for b in opts.sweep)]
        extra += ["--sweep-pairs", str(opts.sweep_pairs)]
        if opts.batch_size is not None:
            extra += ["--batch-size", str(opts.batch_size)]
        rep = _run_variant("ceiling", [*common, *extra], work)
        for key, name in (("unfolded", "ceiling"), ("folded", "ceiling_folded")):
            results[name] = {
                **rep[key],
                "peak_rss_bytes": rep["peak_rss_bytes"],
                "process_s": rep["process_s"],
                "machine": rep["machine"],
            }
    for name in ("naive", *BATCHRANK_VARIANTS):
        if name not in opts.variants or (name == "batchrank_no_table" and tag != "repeated"):
            continue
        say(f"{tag} {name}: {w.pairs:,} pairs")
        out = work / f"out-{tag}-{name}.parquet"
        outputs += [out, manifest_path_of(out)]
        args = [*common, "--movies", str(movies), "--out", str(out)]
        if name.startswith("batchrank"):
            if tag == "all":
                args += ["--cross-join"]
            if opts.batch_size is not None:
                args += ["--batch-size", str(opts.batch_size)]
            if opts.chunk_rows is not None:
                args += ["--chunk-rows", str(opts.chunk_rows)]
        results[name] = _run_variant(name, args, work)
    done = {n: work / f"out-{tag}-{n}.parquet" for n in ("naive", "batchrank", "batchrank_bf16")}
    return {
        "workload": w,
        "variants": results,
        "topk_agreement": topk_agreement(done["naive"], done["batchrank"]),
        "precision_agreement": precision_agreement(done["batchrank"], done["batchrank_bf16"]),
        "model": model,
        "movies": movies,
        "pairs_file": pairs,
    }


def run_bench(opts: BenchOptions, say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Run the benchmark and return its result (see :mod:`batchrank.bench.report`).

    Args:
        opts: the options.
        say: receives progress messages.
    """
    temporary = opts.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="batchrank-bench-")) if temporary else Path(opts.work_dir)  # type: ignore[arg-type]
    work.mkdir(parents=True, exist_ok=True)
    outputs: list[Path] = []
    try:
        machine = _machine()
        started = dt.datetime.now(dt.UTC)
        say(f"work folder {work}")
        runs = []
        for scenario in opts.scenarios:
            w = workload(scenario, opts.pairs, candidates=opts.candidates, movies=opts.movies)
            runs.append(_run_scenario(opts, w, work, outputs, say))
        if "startup" in opts.variants:
            say("startup: batchrank --help, and batchrank score on 1,000 pairs")
            first = runs[0]
            # named after its source: a work folder reused for another workload gets its own
            small = work / f"pairs-startup-{first['pairs_file'].stem}.parquet"
            if not small.exists():
                with atomic_file(small) as tmp:
                    pq.write_table(pq.read_table(first["pairs_file"]).slice(0, STARTUP_PAIRS), tmp)
            startup_out = work / "out-startup.parquet"
            outputs += [startup_out, manifest_path_of(startup_out)]
            first["variants"]["startup"] = _run_startup(
                first["model"], small, first["movies"], work
            )
        for run in runs:
            for rep in run["variants"].values():
                machine.update(rep.pop("machine", {}))
                rep["peak_rss_mib"] = rep["peak_rss_bytes"] / MIB
        machine["load_avg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        machine["parent_peak_rss_bytes"] = peak_rss_bytes()
        from batchrank.bench.report import assemble

        return assemble(
            runs=runs,
            top_k=opts.top_k,
            trained=opts.model is None,
            machine=machine,
            started=started,
            work_dir=work if (opts.keep or not temporary) else None,
        )
    finally:
        if temporary and not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif not opts.keep:
            for p in outputs:
                p.unlink(missing_ok=True)
