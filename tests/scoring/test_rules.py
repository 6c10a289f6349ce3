"""Business rules before top-k: --exclude, --deny-items, --allow-items, --min-stars."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from batchrank.scoring.api import score
from batchrank.scoring.prepare import prepare
from batchrank.scoring.spec import ScoreSpec

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pairs_of(path: Path) -> set[tuple[int, int]]:
    t = pl.read_parquet(path)
    return set(zip(t["user_id"].to_list(), t["movie_id"].to_list(), strict=True))


def test_exclude_training_ratings_leaves_no_training_pair(
    sample_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "top.parquet"
    m = score(
        model=sample_bundle,
        pairs=["all"],
        out=out,
        top_k=10,
        exclude=[SAMPLE / "ratings.csv"],
        progress="none",
    )
    train = pl.read_csv(SAMPLE / "ratings.csv")
    trained = set(zip(train["user_id"].to_list(), train["movie_id"].to_list(), strict=True))
    got = pairs_of(out)
    assert got and not got & trained
    # applied before top-k: every user still gets k movies
    assert pl.read_parquet(out).group_by("user_id").len()["len"].min() == 10
    assert m["rules"]["rows_removed"]["excluded_pairs"] == len(trained)
    assert m["rules"]["exclude"]["pairs"] == len(trained)
    # without the rule, the lists do hold training pairs (the test could fail)
    plain = tmp_path / "plain.parquet"
    score(model=sample_bundle, pairs=["all"], out=plain, top_k=10, progress="none")
    assert pairs_of(plain) & trained


def test_spilled_exclude_set_writes_the_same_bytes(sample_bundle: Path, tmp_path: Path) -> None:
    common: dict[str, Any] = {
        "model": sample_bundle,
        "pairs": ["all"],
        "top_k": 7,
        "exclude": [SAMPLE / "ratings.parquet"],
        "progress": "none",
        "chunk_rows": 5000,
    }
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    score(out=a, **common)
    # 15,000 pairs are 117 KiB of keys: a 0.02 MiB budget partitions them on disk
    before = set(Path(tempfile.gettempdir()).glob("batchrank-exclude-*"))
    m = score(out=b, memory_budget_mb=0.02, **common)
    assert m["rules"]["exclude"]["spilled"] is True
    assert sha(a) == sha(b)
    assert set(Path(tempfile.gettempdir()).glob("batchrank-exclude-*")) == before  # removed


def test_exclude_on_file_pairs_and_folders(sample_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    r = pl.read_csv(SAMPLE / "ratings.csv")
    r[:7000].write_csv(folder / "part1.csv")
    r[7000:].write_parquet(folder / "part2.parquet")
    out = tmp_path / "top.parquet"
    m = score(
        model=sample_bundle,
        pairs=[SAMPLE / "candidates.parquet"],
        out=out,
        exclude=[folder],
        progress="none",
    )
    trained = set(zip(r["user_id"].to_list(), r["movie_id"].to_list(), strict=True))
    assert not pairs_of(out) & trained
    assert m["rules"]["exclude"]["pairs"] == len(trained)
    assert len(m["rules"]["exclude"]["files"]) == 2


def test_deny_allow_and_min_stars(sample_bundle: Path, tmp_path: Path) -> None:
    movies = pl.read_csv(SAMPLE / "movies.csv")["movie_id"].to_list()
    deny, allow = movies[:20], movies[10:120]
    pl.DataFrame({"movie_id": deny}).write_csv(tmp_path / "deny.csv")
    pl.DataFrame({"movie_id": allow}).write_parquet(tmp_path / "allow.parquet")
    out = tmp_path / "top.parquet"
    m = score(
        model=sample_bundle,
        pairs=["all"],
        out=out,
        top_k=10,
        deny_items=tmp_path / "deny.csv",
        allow_items=tmp_path / "allow.parquet",
        min_stars=3.65,  # the 2-epoch sample model predicts 3.5 to 3.85 stars
        progress="none",
    )
    t = pl.read_parquet(out)
    got = set(t["movie_id"].to_list())
    assert got <= set(allow) - set(deny)
    assert t["stars"].min() >= 3.65
    removed = m["rules"]["rows_removed"]
    n_users = m["inputs"][0]["users"]
    assert removed["denied_items"] == 20 * n_users
    assert removed["not_allowed_items"] == (len(movies) - 120) * n_users
    assert removed["below_min_stars"] > 0
    assert m["rules"]["deny_items"]["movies"] == 20


def test_changed_exclude_file_changes_the_fragment_keys(
    sample_bundle: Path, tmp_path: Path
) -> None:
    ex = tmp_path / "ex.csv"
    ex.write_text("user_id,movie_id\n1000,3\n")
    spec = ScoreSpec(
        model=sample_bundle, pairs=("all",), out=tmp_path / "o.parquet", exclude=(str(ex),)
    )
    first = [f.key for f in prepare(spec).fragments]
    plain = [
        f.key
        for f in prepare(
            ScoreSpec(model=sample_bundle, pairs=("all",), out=tmp_path / "o.parquet")
        ).fragments
    ]
    ex.write_text("user_id,movie_id\n1000,14\n")
    second = [f.key for f in prepare(spec).fragments]
    assert first != second and first != plain
    assert not set(first) & set(second)
    assert [
        f.key for f in prepare(ScoreSpec(**{**spec.__dict__, "min_stars": 2.0})).fragments
    ] != second


def test_resume_with_a_changed_exclude_file_never_reuses_a_partial(
    sample_bundle: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    ex = tmp_path / "ex.csv"
    r = pl.read_csv(SAMPLE / "ratings.csv")
    r[:100].select("user_id", "movie_id").write_csv(ex)
    out = tmp_path / "top.parquet"
    common: dict[str, Any] = {"model": sample_bundle, "pairs": ["all"], "progress": "none"}
    score(out=out, exclude=[ex], work_dir=work, **common)
    top = pl.read_parquet(out).select("user_id", "movie_id")
    top.write_csv(ex)  # now exclude exactly what was recommended
    score(out=out, exclude=[ex], work_dir=work, **common)
    assert not pairs_of(out) & set(zip(top["user_id"], top["movie_id"], strict=True))


def test_unknown_ids_in_exclude_are_counted(sample_bundle: Path, tmp_path: Path) -> None:
    ex = tmp_path / "ex.csv"
    ex.write_text("user_id,movie_id\n1000,3\n999999,3\n1000,888888\n")
    m = score(
        model=sample_bundle,
        pairs=["all"],
        out=tmp_path / "o.parquet",
        exclude=[ex],
        progress="none",
    )
    assert m["rules"]["exclude"]["pairs"] == 1
    assert m["rules"]["exclude"]["pairs_unknown_to_model"] == 2


def test_oov_rows_are_matched_on_raw_ids(sample_bundle: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,movie_id\n424242,3\n424242,14\n424242,15\n1000,3\n")
    ex = tmp_path / "ex.csv"
    ex.write_text("user_id,movie_id\n424242,14\n")
    pl.DataFrame({"movie_id": [15]}).write_csv(tmp_path / "deny.csv")
    out = tmp_path / "o.parquet"
    m = score(
        model=sample_bundle,
        pairs=[pairs],
        out=out,
        unknown="oov",
        exclude=[ex],
        deny_items=tmp_path / "deny.csv",
        progress="none",
    )
    assert pairs_of(out) == {(424242, 3), (1000, 3)}
    assert m["rules"]["rows_removed"]["excluded_pairs"] == 1


def test_exclude_as_a_job_key(sample_bundle: Path, tmp_path: Path) -> None:
    from tests.jobs.test_job_run import run

    shutil.copy(SAMPLE / "ratings.csv", tmp_path / "train.csv")
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "rules"\n[score]\nmodel = "{sample_bundle}"\npairs = "all"\n'
        'out = "exports/{date}/top.parquet"\nexclude = ["train.csv"]\nmin_stars = 1.5\n'
    )
    assert run("run", str(job), "--date", "2025-01-31") == 0
    out = tmp_path / "exports" / "2025-01-31" / "top.parquet"
    train = pl.read_csv(SAMPLE / "ratings.csv")
    assert not pairs_of(out) & set(zip(train["user_id"], train["movie_id"], strict=True))


@pytest.mark.ray
def test_ray_engine_applies_the_same_rules(
    ray_session: Any, sample_bundle: Path, tmp_path: Path
) -> None:
    movies = pl.read_csv(SAMPLE / "movies.csv")["movie_id"].to_list()
    pl.DataFrame({"movie_id": movies[:30]}).write_csv(tmp_path / "deny.csv")
    common: dict[str, Any] = {
        "model": sample_bundle,
        "pairs": ["all"],
        "top_k": 10,
        "exclude": [SAMPLE / "ratings.parquet"],
        "deny_items": tmp_path / "deny.csv",
        "min_stars": 2.0,
        "progress": "none",
        "chunk_rows": 7000,
    }
    local = score(out=tmp_path / "local.csv", **common)
    ray = score(out=tmp_path / "ray.csv", engine="ray", concurrency=1, **common)
    assert sha(tmp_path / "local.csv") == sha(tmp_path / "ray.csv")
    assert local["rules"]["rows_removed"] == ray["rules"]["rows_removed"]


@pytest.mark.realdata
@pytest.mark.slow
def test_ml100k_exclude_training_leaves_no_training_pair(ml100k: Path, tmp_path: Path) -> None:
    from batchrank.training import train

    data = pl.read_csv(
        ml100k / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user_id", "movie_id", "rating", "ts"],
    )
    data.select("user_id", "movie_id", "rating").write_csv(tmp_path / "train.csv")
    model = tmp_path / "model"
    train(tmp_path / "train.csv", model, preset="seed", epochs=1, verbose=0)
    out = tmp_path / "top.parquet"
    score(model=model, pairs=["all"], out=out, exclude=[tmp_path / "train.csv"], progress="none")
    got = pl.read_parquet(out).select("user_id", "movie_id")
    assert got.height == 943 * 10
    assert got.join(data, on=["user_id", "movie_id"]).height == 0


def test_rules_module_is_a_pure_function_of_rows() -> None:
    from batchrank.scoring.rules import ExcludeSet, Rules, apply_rules

    keys = np.array([1 * 10 + 2, 3 * 10 + 4], dtype=np.int64)
    rules = Rules(exclude=ExcludeSet(stride=10, n_users=5, keys=keys, pairs=2))
    mapped = pa.table(
        {"u": pa.array([1, 1, 3, 3], pa.int32()), "i": pa.array([2, 3, 4, 5], pa.int32())}
    )
    scored = pa.table(
        {
            "user_id": [1, 1, 3, 3],
            "movie_id": [2, 3, 4, 5],
            "score": pa.array([0.1, 0.2, 0.3, 0.4], pa.float32()),
            "stars": pa.array([1, 2, 3, 4], pa.float32()),
        }
    )
    kept, counts = apply_rules(scored, mapped, rules)
    assert kept.column("movie_id").to_pylist() == [3, 5]
    assert counts["excluded_pairs"] == 2
