"""``batchrank bench`` keeps working: every variant runs and reports (no timing assertions).

One tiny realistic workload (120 users × 5 candidates from 40 movies, its model widened from
a 50-user base) is built once per module. The variants run in this process (their code, not
their start-up, is what can break); one ``batchrank bench`` run starts the real child
processes for two scenarios and the start-up times.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from batchrank.bench import bundle as bench_bundle
from batchrank.bench import variants
from batchrank.bench.agreement import precision_agreement, topk_agreement
from batchrank.bench.data import N_MOVIES, N_USERS, ensure_catalogue, ensure_pairs, pairs_path
from batchrank.bench.process import spawn
from batchrank.bench.report import assemble, ratios, render_table, targets
from batchrank.bench.variants import MARKER, peak_rss_bytes
from batchrank.bench.workload import (
    ensure_workload_pairs,
    movie_ids,
    user_ids,
    workload,
)
from batchrank.bundle import load_bundle
from batchrank.cli.main import cli

PAIRS, CANDIDATES, MOVIES = 600, 5, 40


def test_pairs_are_drawn_without_repetition_per_user(tmp_path: Path) -> None:
    n = N_USERS * N_MOVIES + 5000  # one full cross join, then the start of a second pass
    path = ensure_pairs(tmp_path, n, seed=3)
    assert path == pairs_path(tmp_path, n, 3)
    df = pl.read_parquet(path)
    assert df.height == n
    first = df.head(N_USERS * N_MOVIES)
    assert first.unique().height == first.height  # a whole pass is the cross join
    assert df.unique().height == N_USERS * N_MOVIES
    mtime = path.stat().st_mtime_ns
    assert ensure_pairs(tmp_path, n, seed=3).stat().st_mtime_ns == mtime  # cached by name


def test_realistic_pairs_are_distinct_candidates_grouped_by_user(tmp_path: Path) -> None:
    w = workload("grouped", 1234, candidates=50, movies=60)  # dense rows: the redraw path too
    assert (w.users, w.movies, w.candidates) == (25, 60, 50)
    df = pl.read_parquet(ensure_workload_pairs(tmp_path, w, seed=2))
    assert df.height == 1234
    assert df.unique().height == df.height  # no (user, movie) cell repeats
    users = df["user_id"].to_numpy()
    assert (np.diff(users) >= 0).all()  # grouped by user, in user order
    assert set(users) == set(user_ids(25).tolist())
    assert set(df["movie_id"].to_list()) <= set(movie_ids(60).tolist())
    counts = df.group_by("user_id").len()["len"].to_list()
    assert sorted(counts) == [34] + [50] * 24  # the last user cut short
    first = df.filter(pl.col("user_id") == users[0])["movie_id"].to_numpy()
    assert not (np.diff(first) > 0).all()  # candidates in random order, not sorted
    shuffled = pl.read_parquet(
        ensure_workload_pairs(
            tmp_path, workload("shuffled", 1234, candidates=50, movies=60), seed=2
        )
    )
    assert shuffled.sort(["user_id", "movie_id"]).equals(df.sort(["user_id", "movie_id"]))
    assert not (np.diff(shuffled["user_id"].to_numpy()) >= 0).all()


def test_catalogue_covers_every_user_and_movie(tmp_path: Path) -> None:
    cat = ensure_catalogue(tmp_path, seed=1, ratings=5000)
    ratings = pl.read_parquet(cat.ratings)
    assert ratings.height == 5000
    assert ratings["user_id"].n_unique() == N_USERS
    assert ratings["movie_id"].n_unique() == N_MOVIES
    assert ratings.select("user_id", "movie_id").unique().height == 5000
    assert set(np.unique(ratings["rating"].to_numpy())) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_spawn_measures_the_child_alone(tmp_path: Path) -> None:
    ballast = bytearray(300 << 20)  # make this process's RSS large: the child must not inherit it
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = spawn([sys.executable, "-c", "pass"], log_prefix=tmp_path / "small")
    big = spawn(
        [sys.executable, "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"],
        log_prefix=tmp_path / "big",
    )
    assert small.returncode == big.returncode == 0
    assert 0 < small.peak_rss_bytes < 100 << 20 < 300 << 20 <= peak_rss_bytes()
    assert big.peak_rss_bytes >= 200 << 20
    assert small.wall_s > 0 and small.cpu_s is not None
    fail = spawn([sys.executable, "-c", "import sys; sys.exit(3)"], log_prefix=tmp_path / "fail")
    assert fail.returncode == 3
    del ballast


def test_ratios_and_targets_from_reports() -> None:
    variants = {
        "ceiling": {"pairs_per_s": 1000.0, "cpu_s": 10.0, "peak_rss_bytes": 1, "peak_rss_mib": 1},
        "naive": {"pairs_per_s": 200.0, "cpu_s": 40.0, "peak_rss_bytes": 4, "peak_rss_mib": 4},
        "batchrank": {"pairs_per_s": 800.0, "cpu_s": 8.0, "peak_rss_bytes": 2, "peak_rss_mib": 2},
    }
    rat = ratios(variants)
    assert rat["batchrank_over_naive"] == pytest.approx(4.0)
    assert rat["batchrank_over_ceiling"] == pytest.approx(0.8)
    assert rat["batchrank_over_naive_cpu"] == pytest.approx(5.0)
    assert rat["rss_batchrank_over_naive"] == pytest.approx(0.5)
    assert rat["batchrank_over_ceiling_folded"] is None
    met = {t["name"]: t["met"] for t in targets(variants, rat)}
    assert met == {"batchrank_over_naive": True, "batchrank_peak_rss_mib": True}
    variants["ceiling_folded"] = {"pairs_per_s": 1100.0, "cpu_s": 9.0}
    variants["batchrank_bf16"] = {"pairs_per_s": 1200.0, "cpu_s": 6.0}
    rat = ratios(variants)
    assert rat["bf16_over_batchrank"] == pytest.approx(1.5)
    met = {t["name"]: t["met"] for t in targets(variants, rat)}
    assert met["batchrank_over_ceiling_folded"] is False


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny grouped workload's pairs, titles and model, cached as ``batchrank bench`` would
    (so the bench run below reuses them). The base is 50 users, so the model is widened."""
    work = tmp_path_factory.mktemp("bench-work")
    w = workload("grouped", PAIRS, candidates=CANDIDATES, movies=MOVIES)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench_bundle, "BASE_USERS", 50)
        model = bench_bundle.ensure_workload_bundle(work, w)
    return {
        "work": work,
        "model": model,
        "pairs": ensure_workload_pairs(work, w),
        "movies": bench_bundle.workload_titles(work, MOVIES),
    }


def test_workload_model_knows_exactly_the_workload_ids(tiny: dict[str, Path]) -> None:
    bundle = load_bundle(tiny["model"], model=False)
    assert bundle.users.ids.to_pylist() == user_ids(120).tolist()  # widened from 50 users
    assert bundle.items.ids.to_pylist() == movie_ids(MOVIES).tolist()
    assert bundle.metadata["data"]["widened_from_users"] == 50
    pairs = pl.read_parquet(tiny["pairs"])
    assert pairs.height == PAIRS and pairs.unique().height == PAIRS  # no repeated pair
    assert set(pairs["user_id"].to_list()) == set(user_ids(120).tolist())
    assert set(pairs["movie_id"].to_list()) <= set(movie_ids(MOVIES).tolist())


def _variant(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """Run ``python -m batchrank.bench.variants ARGV`` in this process; its JSON report."""
    assert variants.main(list(argv)) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(MARKER)]
    report: dict[str, Any] = json.loads(line[len(MARKER) :])
    return report


def test_each_variant_reports(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every variant's report, then the table they make (each row named by its scenario)."""
    common = ("--model", str(tiny["model"]), "--pairs", str(tiny["pairs"]))
    ceiling = _variant(capsys, "ceiling", *common, "--sweep", "64,128", "--sweep-pairs", "256")
    reports: dict[str, dict[str, Any]] = {}
    for path, name in (("unfolded", "ceiling"), ("folded", "ceiling_folded")):
        reports[name] = rep = ceiling[path]
        assert rep["path"] == ("generic" if path == "unfolded" else "folded")
        assert rep["pairs"] == PAIRS and rep["pairs_per_s"] > 0 and rep["batch_size"] == 8192
        assert [r["batch_size"] for r in rep["sweep"]] == [64, 128]
    outs = {}
    for name in ("naive", "batchrank", "batchrank_bf16", "batchrank_no_table"):
        outs[name] = out = tmp_path / f"{name}.parquet"
        movies = ("--movies", str(tiny["movies"]), "--out", str(out))
        reports[name] = rep = _variant(capsys, name, *common, *movies)
        assert rep["variant"] == name and rep["pairs"] == PAIRS, name
        assert rep["pairs_per_s"] > 0 and rep["cpu_s"] > 0, name
        assert rep["rows_written"] == 120 * 5, name  # every candidate fits the top 10
    assert reports["batchrank_no_table"]["predictor"] == "folded"
    assert reports["batchrank_bf16"]["predictor"] == "folded+bf16"
    assert topk_agreement(outs["naive"], outs["batchrank"]) == 1.0
    assert outs["batchrank"].read_bytes() == outs["batchrank_no_table"].read_bytes()
    bf16 = precision_agreement(outs["batchrank"], outs["batchrank_bf16"])
    assert bf16 is not None and bf16["users"] == 120
    assert bf16["mean_overlap"] == 1.0  # 5 candidates, top 10: the same movies, maybe reordered
    assert 0 <= bf16["identical_users"] <= 1 and bf16["max_abs_delta_stars"] < 0.5
    for rep in reports.values():  # what the harness adds from the child process
        rep["peak_rss_bytes"] = rep.get("self_peak_rss_bytes") or ceiling["self_peak_rss_bytes"]
        rep["peak_rss_mib"] = rep["peak_rss_bytes"] / (1 << 20)
    w = workload("grouped", PAIRS, candidates=CANDIDATES, movies=MOVIES)
    result = assemble(
        runs=[
            {
                "workload": w,
                "variants": reports,
                "topk_agreement": 1.0,
                "precision_agreement": bf16,
                "model": tiny["model"],
            }
        ],
        top_k=10,
        trained=True,
        machine={},
        started=dt.datetime.now(dt.UTC),
        work_dir=None,
    )
    table = render_table(result)
    for row in (
        "| grouped | ceiling (unfolded, in memory), batch 8,192 |",
        "| grouped | ceiling (folded, in memory), batch 8,192 |",
        "| grouped | naive (polars + model.predict) |",
        "| grouped | batchrank score, batch 8,192 |",
        "| grouped | batchrank score --precision bfloat16, batch 8,192 |",
        "| grouped | batchrank score --score-table never, batch 8,192 |",
        "| grouped | batchrank / naive |",
        "| grouped | batchrank / ceiling (folded) |",
        "| grouped | batchrank bfloat16 / float32 |",
        "grouped: bfloat16 vs float32 on the same pairs:",
    ):
        assert row in table, row


@pytest.mark.slow
def test_bench_runs_each_scenario_in_child_processes(tiny: dict[str, Path]) -> None:
    """``batchrank bench`` itself: a child process per variant, the table printed."""
    args = ["bench", "--pairs", str(PAIRS), "--candidates", str(CANDIDATES)]
    args += ["--movies", str(MOVIES), "--scenario", "grouped,shuffled"]
    args += ["--variants", "batchrank,startup", "--work-dir", str(tiny["work"])]
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["scenario"] for s in report["scenarios"]] == ["grouped", "shuffled"]
    for sc in report["scenarios"]:
        assert sc["model"]["path"] == str(tiny["model"])  # the cached model: same vocabularies
        assert sc["catalogue"] == {"users": 120, "movies": MOVIES, "cross_join": 120 * MOVIES}
        assert sc["distinct_pairs"] == PAIRS
        rep = sc["variants"]["batchrank"]
        assert rep["pairs"] == PAIRS and rep["pairs_per_s"] > 0
        assert rep["peak_rss_bytes"] > 0 and rep["wall_s"] > 0 and rep["process_s"] > 0
    startup = report["variants"]["startup"]
    assert startup["help_s"] > 0 and startup["score_pairs"] == PAIRS
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["jax_backend"]
    (shuffled_file,) = tiny["work"].glob("pairs-shuffled-*.parquet")
    shuffled = pl.read_parquet(shuffled_file)
    assert not (np.diff(shuffled["user_id"].to_numpy()) >= 0).all()  # rows really shuffled
    table = render_table(report)
    for row in (
        "- grouped: 600 pairs, 120 users × 5 distinct candidates from 40 movies, grouped by user",
        "- shuffled: 600 pairs, 120 users × 5 distinct candidates from 40 movies, rows shuffled",
        "| grouped | batchrank score, batch 8,192 |",
        "| shuffled | batchrank score, batch 8,192 |",
        f"| grouped | `batchrank score`, {PAIRS} pairs, cold |",
    ):
        assert row in table, row
    assert not list(tiny["work"].glob("out-*.parquet"))  # outputs removed, inputs kept
