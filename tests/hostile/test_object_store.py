"""Bad remote input against a real S3 API: a missing bucket, a missing key, a malformed URI,
refused credentials, the server going away mid-run. Each is one line naming the URI, the
documented exit code (3 input, 4 model, 5 output), no traceback, nothing published, and no
secret in the message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.jobs.test_job_run import run
from tests.s3server import CREDENTIALS, MotoS3

ROOT = os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHRANK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def remote(s3_server: Any, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bucket holding the tiny bundle (models/m) and one pairs file (cands/p.parquet)."""
    bucket = f"s3://{s3_server.bucket()}"
    s3_server.upload(tiny_bundle, f"{bucket}/models/m")
    pairs = tmp_path_factory.mktemp("pairs") / "p.parquet"
    users = np.repeat(np.arange(1, 61) * 10, 25)
    movies = np.tile(1000 + np.arange(25) * 7, 60)
    pq.write_table(pa.table({"user_id": users, "movie_id": movies}), pairs)
    s3_server.upload(pairs, f"{bucket}/cands/p.parquet")
    return bucket


def _score(capsys: pytest.CaptureFixture[str], **flags: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run("score", *[x for k, v in flags.items() for x in (f"--{k}", v)], "--quiet")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in err
    return code, err


@pytest.mark.parametrize(
    ("flag", "value", "code", "expected"),
    [
        ("pairs", "s3://no-such-bucket-x1/p.parquet", 3, "cannot read (bucket does not exist)"),
        ("pairs", "{b}/cands/missing.parquet", 3, "no such object or prefix"),
        ("pairs", "{b}/cands/*.csv", 3, "pattern matches no objects"),
        ("pairs", "{b}/nothing-here/", 3, "no such object or prefix"),
        ("model", "{b}/models/none", 4, "model bundle not found"),
        ("model", "s3://no-such-bucket-x2/m", 4, "model bundle not found (bucket does not exist)"),
        ("out", "s3://no-such-bucket-x3/t.csv", 5, "write the --out (bucket does not exist)"),
        ("model", "s3:///m", 2, "malformed URI; expected s3://BUCKET/KEY"),
    ],
)  # fmt: skip
def test_bad_remote_paths_name_the_uri(
    capsys: pytest.CaptureFixture[str], remote: str, flag: str, value: str, code: int,
    expected: str, s3_server: Any,
) -> None:  # fmt: skip
    flags = {"model": f"{remote}/models/m", "pairs": f"{remote}/cands/p.parquet",
             "out": f"{remote}/exports/top.csv"}  # fmt: skip
    flags[flag] = value.format(b=remote)
    got, err = _score(capsys, **flags)
    assert got == code
    named = flags[flag].rstrip("/") if code != 2 else "`--model"
    assert err.startswith(f"batchrank: error: {named}"), err
    assert expected in err
    assert s3_server.keys(f"{remote}/exports/") == []  # nothing published
    assert not Path("s3:").exists()


def test_secrets_in_a_uri_never_reach_the_message(
    capsys: pytest.CaptureFixture[str], remote: str
) -> None:
    secret = (
        "s3://AKIAEXAMPLE:wJalrXUtnFEMI-secret@no-such-bucket-x4/p.parquet?X-Amz-Signature=ab12"
    )
    code, err = _score(
        capsys, model=f"{remote}/models/m", pairs=secret, out=f"{remote}/exports/t.csv"
    )
    assert code == 2 and "credentials in a URI are not accepted" in err
    assert "wJalrXUtnFEMI" not in err and "ab12" not in err and "s3://***@" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_credentials_are_one_line(tmp_path: Path, tiny_bundle: Path) -> None:
    """A server that checks signatures (moto with IAM auth on): our keys are unknown to it."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0", "PYTHONPATH": ROOT}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        run_env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                   "PYTHONPATH": ROOT, **CREDENTIALS}  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "batchrank.cli.main", "score", "--model", str(tiny_bundle),
             "--pairs", "s3://private/cands/p.parquet", "--out", str(tmp_path / "t.csv"),
             "--quiet"],
            capture_output=True, text=True, env=run_env, timeout=300, check=False,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait()
    err = proc.stderr.strip()
    assert proc.returncode == 3, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("batchrank: error: s3://private/cands/p.parquet: cannot read (")
    assert "access denied" in err or "credentials refused" in err
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in err
    assert not (tmp_path / "t.csv").exists()


SLOW_RUN = (
    "import sys, time\n"
    "import batchrank.scoring.stage as stage\n"
    "real = stage.map_ids\n"
    "def slow(*a, **k):\n"
    "    time.sleep(0.3)\n"
    "    return real(*a, **k)\n"
    "stage.map_ids = slow  # each chunk takes a while: the server is stopped meanwhile\n"
    "from batchrank.cli.main import main\n"
    "main(sys.argv[1:])\n"
)


def test_the_server_going_away_mid_run_is_one_line_and_publishes_nothing(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    with MotoS3() as server:
        bucket = f"s3://{server.bucket()}"
        server.upload(tiny_bundle, f"{bucket}/models/m")
        users = np.repeat(np.arange(1, 61) * 10, 40)
        movies = np.tile(1000 + np.arange(40) * 7, 60)
        pq.write_table(pa.table({"user_id": users, "movie_id": movies}), tmp_path / "p.parquet",
                       row_group_size=50)  # fmt: skip
        server.upload(tmp_path / "p.parquet", f"{bucket}/cands/p.parquet")
        out = f"{bucket}/exports/top.parquet"
        log = (tmp_path / "run.log").open("w")
        env = {**os.environ, **server.env, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_RUN, "score", "--model", f"{bucket}/models/m",
             "--pairs", f"{bucket}/cands/p.parquet", "--out", out, "--chunk-rows", "50",
             "--quiet"],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        locks = tmp_path / "cache" / "locks"
        try:
            deadline = time.monotonic() + 240
            while not list(locks.rglob("*.batchrank-lock")):  # prepared: the bundle is fetched
                assert proc.poll() is None, (tmp_path / "run.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            server.stop()
            proc.wait(timeout=300)
        finally:
            proc.kill()
            log.close()
        err = (tmp_path / "run.log").read_text().strip()
        # reading (exit 3) or, when Arrow had read the file ahead, the upload (exit 5)
        assert (proc.returncode, err.split(": cannot")[0]) in [
            (3, f"batchrank: error: {bucket}/cands/p.parquet"),
            (5, f"batchrank: error: {out}"),
        ], err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert "cannot reach the storage server" in err
        with MotoS3() as again:  # moto's buckets live in this process: look again
            assert again.keys(f"{bucket}/exports/") == []
    assert not Path("s3:").exists()


def test_a_remote_work_dir_is_accepted() -> None:
    from batchrank.fs import ObjectPath
    from batchrank.scoring.spec import ScoreSpec

    spec = ScoreSpec(model=Path("m"), pairs=("p.parquet",), out=Path("o.csv"), work_dir="s3://b/w")  # type: ignore[arg-type]
    assert isinstance(spec.work_dir, ObjectPath)  # resumed from the store (test_remote_workdir)


def test_parts_on_an_object_store_are_accepted() -> None:
    from batchrank.scoring.spec import ScoreSpec

    spec = ScoreSpec.from_options(
        model="s3://b/models/m", pairs=["s3://b/cands/p.parquet"],
        out="s3://b/exports/out.parquet", max_rows_per_file=10,
    )  # fmt: skip
    assert spec.max_rows_per_file == 10


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("exports/top.parquet", "is an object; with max_rows_per_file"),
        ("exports/top.parquet/theirs.csv", "holds objects batchrank did not write"),
    ],
)
def test_parts_never_replace_an_object_or_someone_elses_prefix(
    capsys: pytest.CaptureFixture[str], remote: str, s3_server: Any, tmp_path: Path, key: str,
    expected: str,
) -> None:  # fmt: skip
    (tmp_path / "theirs").write_bytes(b"keep me")
    s3_server.upload(tmp_path / "theirs", f"{remote}/{key}")
    out = f"{remote}/exports/top.parquet"
    code, err = _score(capsys, model=f"{remote}/models/m", pairs=f"{remote}/cands/p.parquet",
                       out=out, **{"max-rows-per-file": "100"})  # fmt: skip
    assert code == 2, err
    assert err.startswith(f"batchrank: error: --out {out} ") and expected in err, err
    assert s3_server.keys(f"{remote}/exports/") == [key]  # left alone
    assert s3_server.get(f"{remote}/{key}") == b"keep me"
    s3_server.client().delete_object(Bucket=remote.removeprefix("s3://"), Key=key)
