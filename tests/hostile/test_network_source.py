"""A network training source (``tfds:``) without network or cache fails in seconds, in one
line with exit 3, instead of retrying for minutes; the shipped jobs run offline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchrank.tfds_source import reachable

ROOT = Path(__file__).parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRANK_")}
    env.update(JAX_PLATFORMS="cpu", TFDS_DATA_DIR=str(tmp_path / "tfds-empty-cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_unreachable_host_is_reported_quickly() -> None:
    start = time.monotonic()
    why = reachable("batchrank-test.invalid", timeout=2.0)  # .invalid never resolves
    assert why is not None
    assert time.monotonic() - start < 5


@pytest.mark.skipif(
    reachable("files.grouplens.org", timeout=2.0) is None, reason="online: tfds would download"
)
@pytest.mark.parametrize("command", ["train", "run"])
def test_tfds_without_network_or_cache_fails_fast(tmp_path: Path, command: str) -> None:
    if command == "train":
        args = ["train", "--ratings", "tfds:movielens/100k-ratings", "--out", "model"]
    else:
        (tmp_path / "job.toml").write_text(
            '[job]\nname = "net"\n[train]\nratings = "tfds:movielens/100k-ratings"\n'
            'out = "model"\n[score]\npairs = "all"\nout = "exports/{date}/top.parquet"\n'
        )
        args = ["run", "job.toml", "--quiet"]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "batchrank.cli.main", *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 3, proc.stderr
    assert elapsed < 30, elapsed  # tfds alone retries for minutes
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("batchrank: error: tfds:movielens/100k-ratings: not in the local ")
    assert "files.grouplens.org cannot be reached" in line
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("job", sorted((ROOT / "jobs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_jobs_use_no_network_source(job: Path) -> None:
    from batchrank.jobs.loader import load_job

    spec = load_job(job, environ={})  # local inputs exist (the loader checks)
    assert spec.train is None or not spec.train.is_tfds, f"{job.name} needs the network"
