"""End-to-end tests of `batchrank score` and `batchrank.score` on real bundles and files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchrank
from batchrank.bundle import load_bundle
from batchrank.cli.main import main
from batchrank.scoring.predict import make_predictor

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
CANDS = SAMPLE / "candidates.parquet"
MOVIES = SAMPLE / "movies.parquet"


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def reference_topk(bundle_path: Path, pairs: pl.DataFrame, k: int) -> pl.DataFrame:
    """Brute force: score every known pair, de-duplicate, sort, take k per user."""
    bundle = load_bundle(bundle_path)
    pairs = pairs.unique(subset=["user_id", "movie_id"])
    u = bundle.users.lookup(pa.array(pairs["user_id"].to_numpy()))
    i = bundle.items.lookup(pa.array(pairs["movie_id"].to_numpy()))
    keep = (u > 0) & (i > 0)
    scores, stars = make_predictor(bundle, batch_size=64).predict(u[keep], i[keep])
    df = pairs.filter(pl.Series(keep)).with_columns(score=pl.Series(scores), stars=pl.Series(stars))
    return (
        df.sort(["user_id", "stars", "movie_id"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True)
        .head(k)
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id").cast(pl.Int32))
        .select("user_id", "rank", "movie_id", "stars", "score")
    )


def test_sample_long_parquet_end_to_end(sample_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "top10.parquet"
    manifest = batchrank.score(
        model=sample_bundle, pairs=[CANDS], items=MOVIES, out=out, progress="none"
    )
    df = pl.read_parquet(out)
    assert df.columns == ["user_id", "rank", "movie_id", "title", "stars", "score"]
    assert df.height == manifest["counts"]["rows_written"] == 3000
    assert manifest["counts"]["users_written"] == 300
    # sorted by user then rank, k per user, no duplicate pair, titles joined
    assert df.equals(df.sort(["user_id", "rank"]))
    assert df.group_by("user_id").len()["len"].max() == 10
    assert df.select(["user_id", "movie_id"]).is_duplicated().sum() == 0
    assert df["title"].null_count() == 0
    assert ((df["stars"] >= 0) & (df["stars"] <= 5)).all()
    # the sample has 10 pairs with an unknown id, skipped and counted
    c = manifest["counts"]
    assert c["rows_read"] == 17988
    assert c["rows_skipped_unknown_user"] + c["rows_skipped_unknown_movie"] == 10
    assert manifest["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    meta = pq.read_metadata(out).metadata
    assert meta[b"batchrank.model_fingerprint"].decode() == manifest["model"]["fingerprint"]
    on_disk = json.loads((out.parent / "top10.parquet.manifest.json").read_text())
    assert on_disk["output"]["sha256"] == manifest["output"]["sha256"]
    # equal to the brute-force reference
    ref = reference_topk(sample_bundle, pl.read_parquet(CANDS), 10)
    assert df.drop("title").equals(ref)


@pytest.mark.parametrize(
    ("fmt", "layout"),
    [("csv", "long"), ("jsonl", "long"), ("jsonl", "nested"), ("parquet", "nested")],
)
def test_formats_and_layouts_hold_the_same_lists(
    sample_bundle: Path, tmp_path: Path, fmt: str, layout: str
) -> None:
    base = tmp_path / "base.parquet"
    batchrank.score(model=sample_bundle, pairs=[CANDS], out=base, top_k=5, progress="none")
    expected = pl.read_parquet(base)
    out = tmp_path / f"out.{fmt}"
    batchrank.score(
        model=sample_bundle, pairs=[CANDS], out=out, top_k=5, layout=layout, progress="none"
    )
    if fmt == "csv":
        got = pl.read_csv(out, schema_overrides={"stars": pl.Float32, "score": pl.Float32})
    elif fmt == "jsonl":
        got = pl.read_ndjson(out)
    else:
        got = pl.read_parquet(out)
    if layout == "nested":
        assert got.height == expected["user_id"].n_unique()
        got = got.explode("items").unnest("items")
    got = got.select(expected.columns).cast(dict(expected.schema))  # type: ignore[arg-type]
    assert got.equals(expected)


def test_pairs_all_equals_explicit_cross_join(sample_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(sample_bundle)
    users = bundle.users.ids.to_numpy()[:40]
    items = bundle.items.ids.to_numpy()
    cross = pl.DataFrame(
        {"user_id": np.repeat(users, len(items)), "movie_id": np.tile(items, len(users))}
    )
    cross_path = tmp_path / "cross.parquet"
    cross.write_parquet(cross_path)
    users_path = tmp_path / "users.csv"
    pl.DataFrame({"user_id": users}).write_csv(users_path)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    batchrank.score(model=sample_bundle, pairs=[cross_path], out=a, progress="none")
    m = batchrank.score(
        model=sample_bundle, pairs=["all"], users=users_path, out=b, chunk_rows=777, progress="none"
    )
    assert a.read_bytes() == b.read_bytes()
    assert m["counts"]["users_written"] == 40


def test_spill_mode_gives_identical_output(sample_bundle: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    batchrank.score(model=sample_bundle, pairs=[CANDS], out=a, progress="none")
    m = batchrank.score(
        model=sample_bundle,
        pairs=[CANDS],
        out=b,
        memory_budget_mb=0.01,
        chunk_rows=1000,
        progress="none",
    )
    assert m["topk"]["spilled"] is True
    assert a.read_bytes() == b.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    chunk_rows=st.integers(min_value=1, max_value=5000),
    batch_size=st.integers(min_value=1, max_value=20000),
    k=st.integers(min_value=1, max_value=12),
    n_files=st.integers(min_value=1, max_value=3),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_output_independent_of_chunking_and_equal_to_brute_force(
    sample_bundle: Path,
    tmp_path_factory: pytest.TempPathFactory,
    chunk_rows: int,
    batch_size: int,
    k: int,
    n_files: int,
    seed: int,
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(seed)
    cands = pl.read_parquet(CANDS)
    rows = cands.sample(n=3000, with_replacement=True, seed=seed)  # duplicates on purpose
    parts = np.array_split(rng.permutation(rows.height), n_files)
    paths = []
    for j, idx in enumerate(parts):
        part = rows[idx.tolist()]
        p = tmp / f"part{j}.{'csv' if j % 2 else 'parquet'}"
        part.write_csv(p) if j % 2 else part.write_parquet(p)
        paths.append(str(p))
    base, out = tmp / "base.parquet", tmp / "out.parquet"
    batchrank.score(model=sample_bundle, pairs=paths, out=base, top_k=k, progress="none")
    batchrank.score(
        model=sample_bundle,
        pairs=paths,
        out=out,
        top_k=k,
        chunk_rows=chunk_rows,
        batch_size=batch_size,
        progress="none",
    )
    assert base.read_bytes() == out.read_bytes()
    ref = reference_topk(sample_bundle, rows, k)
    assert pl.read_parquet(out).drop("title").equals(ref)


def test_rejects_are_written_and_counted(sample_bundle: Path, tmp_path: Path) -> None:
    cands = pl.read_csv(SAMPLE / "candidates.csv", infer_schema=False).head(1000)
    bad = pl.DataFrame(
        {"user_id": ["abc", None, "1000"], "movie_id": ["1", "3", "x1"]},
    )
    path = tmp_path / "pairs.csv"
    pl.concat([cands, bad]).write_csv(path)
    rejects = tmp_path / "rejects.csv"
    out = tmp_path / "out.parquet"
    m = batchrank.score(
        model=sample_bundle,
        pairs=[path],
        out=out,
        rejects=rejects,
        progress="none",
    )
    assert m["counts"]["rows_rejected"] == 3
    assert m["counts"]["rejected_by_reason"] == {
        "null_user_id": 1,
        "null_movie_id": 0,
        "bad_user_id": 1,
        "bad_movie_id": 1,
    }
    rej = pl.read_csv(rejects, infer_schema=False)
    assert rej["row"].to_list() == ["1001", "1002", "1003"]
    assert sorted(rej["reason"].to_list()) == ["bad_movie_id", "bad_user_id", "null_user_id"]


def test_too_many_rejects_fails_and_commits_nothing(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("user_id,movie_id\n1000,1\nabc,3\n1000,x\n")
    out = tmp_path / "out.parquet"
    rejects = tmp_path / "rejects.csv"
    code = _run(
        [
            "score",
            "--model",
            str(sample_bundle),
            "--pairs",
            str(path),
            "--out",
            str(out),
            "--rejects",
            str(rejects),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "more than --max-reject-fraction" in err
    assert "Traceback" not in err
    assert not out.exists() and not rejects.exists()
    assert not list(tmp_path.glob(".*"))


def test_unknown_fail_names_the_id(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("user_id,movie_id\n1000,1\n999999,3\n")
    out = tmp_path / "out.parquet"
    code = _run(
        [
            "score",
            "--model",
            str(sample_bundle),
            "--pairs",
            str(path),
            "--out",
            str(out),
            "--unknown",
            "fail",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1 and "999999" in err[0] and "row 2" in err[0]
    assert not out.exists()


def test_unknown_oov_scores_unknown_ids(sample_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("user_id,movie_id\n1000,1\n999999,3\n1000,999999\n")
    m = batchrank.score(
        model=sample_bundle, pairs=[path], out=tmp_path / "o.csv", unknown="oov", progress="none"
    )
    assert m["counts"]["rows_scored"] == 3
    got = pl.read_csv(tmp_path / "o.csv")
    assert set(got["user_id"].to_list()) == {1000, 999999}
    assert got.filter(pl.col("movie_id") == 999999)["title"].null_count() == 1
    assert m["counts"]["missing_titles"] == 1


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("user,movie\n1,2\n", "column `user_id`"),
        ("", "empty"),
    ],
)
def test_bad_csv_inputs_exit_3_with_one_line(
    sample_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    expect: str,
) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(content)
    out = tmp_path / "out.parquet"
    code = _run(["score", "--model", str(sample_bundle), "--pairs", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1 and expect in err[0] and str(path) in err[0]
    assert not out.exists()


def test_truncated_parquet_exit_3(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pairs.parquet"
    data = CANDS.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code = _run(
        [
            "score",
            "--model",
            str(sample_bundle),
            "--pairs",
            str(path),
            "--out",
            str(tmp_path / "o.parquet"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 3 and str(path) in err and "Traceback" not in err


def test_missing_model_exit_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(
        [
            "score",
            "--model",
            str(tmp_path / "nope"),
            "--pairs",
            str(CANDS),
            "--out",
            str(tmp_path / "o.parquet"),
        ]
    )
    assert code == 4
    assert "model bundle not found" in capsys.readouterr().err


def test_json_flag_prints_the_manifest(sample_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchrank.cli.main",
            "score",
            "--model",
            str(sample_bundle),
            "--pairs",
            str(CANDS),
            "--out",
            str(out),
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["output"]["path"] == str(out)
    assert manifest["counts"]["users_written"] == 300


def test_killed_run_leaves_nothing_and_next_run_cleans_up(
    sample_bundle: Path, tmp_path: Path
) -> None:
    # A few million pairs, so the run is still scoring when it is killed.
    bundle = load_bundle(sample_bundle)
    rng = np.random.default_rng(0)
    n = 3_000_000
    big = tmp_path / "big.parquet"
    pl.DataFrame(
        {
            "user_id": bundle.users.ids.to_numpy()[rng.integers(0, len(bundle.users), n)],
            "movie_id": bundle.items.ids.to_numpy()[rng.integers(0, len(bundle.items), n)],
        }
    ).write_parquet(big, row_group_size=100_000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "top.parquet"
    leftover = out_dir / ".top.parquet.batchrank-tmp-0123456789ab"
    leftover.write_text("from an earlier killed run")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchrank.cli.main",
            "score",
            "--model",
            str(sample_bundle),
            "--pairs",
            str(big),
            "--out",
            str(out),
            "--chunk-rows",
            "50000",
            "--memory-budget-mb",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # wait until it is scoring (it has cleaned the old leftover and started spilling)
    deadline = time.monotonic() + 120
    assert proc.stderr is not None
    for line in proc.stderr:
        if "scoring" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert not (out_dir / "top.parquet.manifest.json").exists()
    # the next run succeeds and leaves nothing but the output and its manifest
    small = tmp_path / "small.parquet"
    pl.read_parquet(big).head(5000).write_parquet(small)
    batchrank.score(model=sample_bundle, pairs=[small], out=out, progress="none")
    assert sorted(p.name for p in out_dir.iterdir()) == ["top.parquet", "top.parquet.manifest.json"]


def test_score_table_gives_identical_bytes(sample_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(sample_bundle)
    cells = bundle.users.size * bundle.items.size
    rng = np.random.default_rng(3)
    n = 2 * cells + 1000
    pairs = tmp_path / "pairs.parquet"
    pl.DataFrame(
        {
            "user_id": bundle.users.ids.to_numpy()[rng.integers(0, len(bundle.users), n)],
            "movie_id": bundle.items.ids.to_numpy()[rng.integers(0, len(bundle.items), n)],
        }
    ).write_parquet(pairs)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    ma = batchrank.score(model=sample_bundle, pairs=[pairs], out=a, progress="none")
    mb = batchrank.score(
        model=sample_bundle, pairs=[pairs], out=b, score_table="never", progress="none"
    )
    assert ma["predictor"] == "folded+table"
    assert mb["predictor"] == "folded"
    assert a.read_bytes() == b.read_bytes()
