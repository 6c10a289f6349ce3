"""``batchrank bench`` keeps working: every variant runs and reports (no timing assertions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from batchrank.bench.data import N_MOVIES, N_USERS, ensure_catalogue, ensure_pairs, pairs_path
from batchrank.bench.process import spawn
from batchrank.bench.report import ratios, render_table, targets
from batchrank.bench.variants import peak_rss_bytes
from batchrank.bench.workload import ensure_workload_pairs, movie_ids, user_ids, workload
from batchrank.cli.main import cli

VARIANT_KEYS = ("ceiling", "ceiling_folded", "naive", "batchrank", "startup")


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


@pytest.mark.slow
def test_bench_reports_every_variant(tmp_path: Path) -> None:
    work = tmp_path / "work"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--pairs",
            "20000",
            "--scenario",
            "grouped,repeated",
            "--movies",
            "2000",
            "--json",
            "--work-dir",
            str(work),
            "--sweep",
            "1024,4096",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pairs"] == 20000
    variants = report["variants"]
    for name in VARIANT_KEYS:
        assert variants[name]["pairs_per_s"] > 0, name
        assert variants[name]["peak_rss_bytes"] > 0, name
        assert variants[name]["wall_s"] > 0, name
    assert [r["batch_size"] for r in variants["ceiling"]["sweep"]] == [1024, 4096]
    assert variants["ceiling"]["path"] == "generic"
    assert variants["ceiling_folded"]["path"] == "folded"
    assert variants["naive"]["pairs"] == variants["batchrank"]["pairs"] == 20000
    assert variants["startup"]["help_s"] > 0
    for key in ("batchrank_over_naive", "batchrank_over_ceiling", "batchrank_over_ceiling_folded"):
        assert report["ratios"][key] > 0, key
    assert {t["name"] for t in report["targets"]} >= {"batchrank_over_naive", "help_s"}
    assert report["machine"]["cpu_count"] >= 1
    assert report["machine"]["jax_backend"]
    assert report["topk_agreement_naive_batchrank"] > 0.9
    assert report["scenario"] == "grouped"
    assert [s["scenario"] for s in report["scenarios"]] == ["grouped", "repeated"]
    assert report["catalogue"] == {"users": 200, "movies": 2000, "cross_join": 400_000}
    bf16 = report["precision_agreement_bf16_fp32"]
    assert bf16["users"] == 200 and 0 <= bf16["identical_users"] <= 1
    assert bf16["mean_overlap"] > 0.5 and bf16["max_abs_delta_stars"] < 0.5
    table = render_table(report)
    assert "| grouped | batchrank score" in table and "| repeated | batchrank score" in table
    # Inputs and the model stay in --work-dir for the next run; outputs are removed.
    assert pairs_path(work, 20000, 0).exists()
    assert not list(work.glob("out-*.parquet"))
