"""``batchrank.run_job``: the job runner for orchestrators, with the CLI's lock, resume,
``_SUCCESS`` and ``latest``; dates and overrides as templating produces them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrank
from batchrank.errors import ConfigError, LockedError
from batchrank.jobs.loader import load_job
from batchrank.storage.lock import JobLock
from tests.conftest import MOVIE_IDS, USER_IDS


@pytest.fixture
def job(tmp_path: Path, tiny_bundle: Path) -> Path:
    u, m = np.repeat(USER_IDS[:20], len(MOVIE_IDS)), np.tile(MOVIE_IDS, 20)
    pq.write_table(pa.table({"user_id": u, "movie_id": m}), tmp_path / "pairs.parquet")
    path = tmp_path / "job.toml"
    path.write_text(
        f'[job]\nname = "api"\n[score]\nmodel = "{tiny_bundle}"\npairs = "pairs.parquet"\n'
        'top_k = 5\nout = "exports/{date}/top.parquet"\n'
    )
    return path


def test_import_batchrank_stays_light() -> None:
    code = (
        "import sys, batchrank; batchrank.run_job; "
        "print([m for m in ('jax', 'keras', 'tensorflow', 'polars') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_job_publishes_like_the_cli(job: Path, tmp_path: Path) -> None:
    result = batchrank.run_job(job, date="2025-01-31", overrides={"score.top_k": "3"}, environ={})
    assert isinstance(result, batchrank.RunResult)
    assert result.date == dt.date(2025, 1, 31) and not result.resumed
    assert result.output == tmp_path / "exports" / "2025-01-31" / "top.parquet"
    assert result.manifest["options"]["top_k"] == 3  # "3" from templating is the number 3
    assert result.success is not None and json.loads(result.success.read_text())["run_id"] == (
        result.run_id
    )
    assert result.latest is not None and result.latest_updated
    assert result.latest.read_text().strip() == "2025-01-31/top.parquet"
    again = batchrank.run_job(job, date=dt.date(2025, 1, 31), environ={})
    assert again.run_id != result.run_id and not again.resumed


def test_run_job_resumes_and_respects_the_lock(job: Path, tmp_path: Path) -> None:
    work = tmp_path / "exports" / "2025-02-01" / ".batchrank-work" / "api-2025-02-01"
    work.mkdir(parents=True)
    state = {"job": "api", "date": "2025-02-01", "run_id": "interrupted9"}
    (work / "run.json").write_text(json.dumps(state))
    spec = load_job(job, environ={}, date=dt.date(2025, 2, 1))
    with JobLock(spec.lock_path, job="api", date="2025-02-01"), pytest.raises(LockedError):
        batchrank.run_job(job, date="2025-02-01", environ={})
    result = batchrank.run_job(job, date=dt.datetime(2025, 2, 1, 2, 30), environ={})
    assert result.resumed and result.run_id == "interrupted9"
    assert not work.exists()
    fresh = tmp_path / "exports" / "2025-02-01" / ".batchrank-work" / "api-2025-02-01"
    fresh.mkdir(parents=True)
    (fresh / "run.json").write_text(json.dumps(state))
    assert batchrank.run_job(job, date="2025-02-01", environ={}, fresh=True).run_id != (
        "interrupted9"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"date": "31/01/2025"}, "YYYY-MM-DD; received '31/01/2025'"),
        ({"date": 20250131}, "received int 20250131"),
        ({"overrides": [1]}, "overrides must be"),
        ({"overrides": {"score.top_k": "five"}}, "top_k"),
        ({"progress": "loud"}, "progress must be"),
    ],
)
def test_bad_arguments_are_one_config_error(job: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        batchrank.run_job(job, environ={}, **kwargs)
    assert message in str(info.value)
