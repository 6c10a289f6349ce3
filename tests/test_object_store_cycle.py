"""The whole cycle on s3:// against a real S3 API (moto's server on 127.0.0.1, see conftest):
train → bundle on S3 → score from an S3 prefix with globs → job run with {date}, _SUCCESS and
latest, kill -9 mid-upload and resume; every output byte-identical to the same run on local
files, and nothing left in the bucket but what a consumer reads."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.jobs.test_job_run import kill_9_when, run

ROOT = os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])
"""The checkout first: a subprocess imports this batchrank, not an installed one."""
USERS = np.arange(1, 61) * 10
MOVIES = 1000 + np.arange(40) * 7


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fetched bundles, locks and work state of remote outputs in this test's folder."""
    monkeypatch.setenv("BATCHRANK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a path mistaken for local would appear here as ./s3:


@pytest.fixture(scope="module")
def bucket(s3_server: Any) -> str:
    return f"s3://{s3_server.bucket()}"


@pytest.fixture(scope="module")
def local_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three pairs files, Parquet and CSV, plus files a glob must skip."""
    folder = tmp_path_factory.mktemp("cands")
    rng = np.random.default_rng(5)
    for part in range(3):
        u = np.repeat(USERS[part * 20 : (part + 1) * 20], 25)
        m = rng.choice(MOVIES, len(u))
        table = pa.table({"user_id": u, "movie_id": m})
        if part == 2:
            pacsv.write_csv(table, folder / f"part-{part}.csv")
        else:
            pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=100)
    (folder / "_SUCCESS").write_text("{}")
    (folder / ".hidden.parquet").write_bytes(b"not parquet")
    return folder


@pytest.fixture(scope="module")
def s3_bundle(
    s3_server: Any, bucket: str, tiny_ratings: Any, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A bundle trained from ratings and items on S3 straight into S3 (train --out s3://)."""
    s3_server.upload(tiny_ratings.ratings, f"{bucket}/train/ratings.parquet")
    s3_server.upload(tiny_ratings.items, f"{bucket}/train/items.csv")
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("train"))
    try:
        code = run(
            "train", "--ratings", f"{bucket}/train/ratings.parquet",
            "--items", f"{bucket}/train/items.csv", "--preset", "seed", "--epochs", "1",
            "--out", f"{bucket}/models/m", "--quiet",
        )  # fmt: skip
        assert code == 0
        assert not Path("s3:").exists()
    finally:
        os.chdir(cwd)
    return f"{bucket}/models/m"


def _download(s3_server: Any, uri: str, dest: Path) -> Path:
    for key in s3_server.keys(uri + "/"):
        bucket = uri.removeprefix("s3://").split("/")[0]
        rel = key[len(uri.removeprefix(f"s3://{bucket}/")) + 1 :]
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(s3_server.get(f"s3://{bucket}/{key}"))
    return dest


@pytest.fixture(scope="module")
def local_bundle(s3_server: Any, s3_bundle: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same bundle, copied to local disk."""
    return _download(s3_server, s3_bundle, tmp_path_factory.mktemp("local-model") / "m")


def test_bundle_on_s3_is_whole_and_nothing_else_is_left(s3_server: Any, s3_bundle: str) -> None:
    keys = s3_server.keys(s3_bundle)
    names = sorted(k.rsplit("/", 1)[1] for k in keys)
    assert "metadata.json" in names and "weights.npz" in names and "users.parquet" in names
    assert not [k for k in s3_server.keys(s3_bundle.rsplit("/", 1)[0]) if "_batchrank-tmp" in k]


def test_score_s3_to_s3_equals_the_local_run(
    s3_server: Any, bucket: str, s3_bundle: str, local_bundle: Path, local_pairs: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    day = f"{bucket}/cands/2026-12-01"
    s3_server.upload(local_pairs, day)
    out = f"{bucket}/exports/2026-12-01/top10.parquet"
    code = run(
        "score", "--model", s3_bundle, "--pairs", f"{day}/*.parquet", "--pairs", f"{day}/*.csv",
        "--out", out, "--rejects", f"{bucket}/exports/2026-12-01/rejects.csv", "--quiet",
        "--chunk-rows", "70",
    )  # fmt: skip
    assert code == 0
    local_out = tmp_path / "local" / "top10.parquet"
    code = run(
        "score", "--model", str(local_bundle), "--pairs", str(local_pairs / "part-0.parquet"),
        "--pairs", str(local_pairs / "part-1.parquet"), "--pairs",
        str(local_pairs / "part-2.csv"), "--out", str(local_out), "--quiet",
    )  # fmt: skip
    assert code == 0
    assert s3_server.get(out) == local_out.read_bytes()
    manifest = json.loads(s3_server.get(out + ".manifest.json"))
    assert manifest["output"]["path"] == out
    assert [f["path"] for f in manifest["inputs"]] == [
        f"{day}/part-0.parquet", f"{day}/part-1.parquet", f"{day}/part-2.csv",
    ]  # fmt: skip
    assert (
        manifest["output"]["sha256"]
        == json.loads((local_out.parent / "top10.parquet.manifest.json").read_text())["output"][
            "sha256"
        ]
    )
    keys = s3_server.keys(f"{bucket}/exports/")
    assert keys == [
        "exports/2026-12-01/rejects.csv",
        "exports/2026-12-01/top10.parquet",
        "exports/2026-12-01/top10.parquet.manifest.json",
    ]  # no staging objects, no rollback copies
    assert not Path("s3:").exists()

    # a prefix finds the same files (never _SUCCESS or hidden ones); the run replaces the
    # export in place with the same bytes
    assert run("score", "--model", s3_bundle, "--pairs", day + "/", "--out", out, "--quiet") == 0
    assert s3_server.get(out) == local_out.read_bytes()


def _job(tmp_path: Path, model: str, pairs: str, out: str, extra: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "job.toml"
    path.write_text(
        f'[job]\nname = "nightly"\npreview_users = 2\n[score]\nmodel = "{model}"\n'
        f'pairs = "{pairs}"\nout = "{out}"\ntop_k = 5\nchunk_rows = 100\n{extra}'
    )
    return path


def test_job_run_on_s3_publishes_success_and_latest(
    s3_server: Any, bucket: str, s3_bundle: str, local_bundle: Path, local_pairs: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for day in ("2026-12-01", "2026-12-02"):
        s3_server.upload(local_pairs, f"{bucket}/jobcands/{day}")
    storage = '[storage]\nregion = "us-east-1"\n'
    job = _job(tmp_path, s3_bundle, f"{bucket}/jobcands/{{date}}/*.parquet",
               f"{bucket}/jobs/{{date}}/top5.parquet", storage)  # fmt: skip
    assert run("run", str(job), "--date", "2026-12-02") == 0
    assert "top 5 for user 10:" in capsys.readouterr().out  # the preview reads the object
    assert run("run", str(job), "--date", "2026-12-01", "--quiet") == 0  # a backfill
    keys = s3_server.keys(f"{bucket}/jobs/")
    assert keys == [
        "jobs/2026-12-01/_SUCCESS", "jobs/2026-12-01/top5.parquet",
        "jobs/2026-12-01/top5.parquet.manifest.json", "jobs/2026-12-02/_SUCCESS",
        "jobs/2026-12-02/top5.parquet", "jobs/2026-12-02/top5.parquet.manifest.json",
        "jobs/latest",
    ]  # fmt: skip
    assert s3_server.get(f"{bucket}/jobs/latest").decode() == "2026-12-02/top5.parquet\n"
    success = json.loads(s3_server.get(f"{bucket}/jobs/2026-12-02/_SUCCESS"))
    data = s3_server.get(f"{bucket}/jobs/2026-12-02/top5.parquet")
    entry = success["files"][0]
    assert entry["path"] == "top5.parquet" and entry["bytes"] == len(data)

    local = _job(tmp_path / "local", str(local_bundle), str(local_pairs / "*.parquet"),
                 "exports/{date}/top5.parquet")  # fmt: skip
    assert run("run", str(local), "--date", "2026-12-02", "--quiet") == 0
    assert data == (tmp_path / "local" / "exports" / "2026-12-02" / "top5.parquet").read_bytes()
    assert not Path("s3:").exists()


SLOW_UPLOAD = (
    "import sys, time\n"
    "import batchrank.storage.remote as remote\n"
    "real = remote._upload\n"
    "def slow(local, dest):\n"
    "    real(local, dest)\n"
    "    if '.batchrank-work' not in str(dest):  # not the resume state: the export\n"
    "        time.sleep(60)\n"
    "remote._upload = slow  # the upload is done, the commit not yet: the test kills it here\n"
    "from batchrank.cli.main import main\n"
    "main(sys.argv[1:])\n"
)


def test_kill_9_mid_upload_publishes_nothing_and_the_rerun_resumes(
    s3_server: Any, bucket: str, s3_bundle: str, local_pairs: Path, tmp_path: Path
) -> None:
    s3_server.upload(local_pairs, f"{bucket}/killcands/2026-12-03")
    job = _job(tmp_path, s3_bundle, f"{bucket}/killcands/{{date}}/*.parquet",
               f"{bucket}/kill/{{date}}/top5.parquet")  # fmt: skip
    staging = f"{bucket}/kill/2026-12-03/_batchrank-tmp/"
    args = ["run", str(job), "--date", "2026-12-03"]
    env = {**os.environ, "PYTHONPATH": ROOT}  # the endpoint, credentials and cache kept
    kill_9_when(SLOW_UPLOAD, args, lambda: bool(s3_server.keys(staging)),
                tmp_path / "killed.log", env)  # fmt: skip
    left = s3_server.keys(f"{bucket}/kill/")
    work = [k for k in left if "/.batchrank-work/" in k]  # the resume state, on S3 as well
    assert work and all("/_batchrank-tmp/" in k for k in left if k not in work)
    assert any(k.endswith(".json") and "/fragment-" in k for k in work)  # nothing a consumer reads

    assert run("run", str(job), "--date", "2026-12-03", "--quiet") == 0
    keys = s3_server.keys(f"{bucket}/kill/")
    assert keys == [
        "kill/2026-12-03/_SUCCESS", "kill/2026-12-03/top5.parquet",
        "kill/2026-12-03/top5.parquet.manifest.json", "kill/latest",
    ]  # the dead run's staging objects are gone  # fmt: skip
    manifest = json.loads(s3_server.get(f"{bucket}/kill/2026-12-03/top5.parquet.manifest.json"))
    assert manifest["resume"]["fragments_resumed"] == manifest["resume"]["fragments"] == 2
