"""SIGTERM / SIGINT / SIGHUP stop `batchrank run` cleanly: one line, a `run_failed` event,
exit 128 + signal, no temporary files, the lock released, and the next run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.errors import EXIT_CODES
from batchrank.storage import TMP_MARK
from tests.conftest import MOVIE_IDS, USER_IDS
from tests.jobs.test_job_run import SLOW_RUN  # map_ids slowed down, so a run can be signalled

DATE = "2025-01-31"


def make_job(folder: Path, bundle: Path) -> Path:
    pairs = folder / "pairs"
    pairs.mkdir(parents=True)
    for part in range(6):
        users = USER_IDS[part * 10 : (part + 1) * 10]
        u, m = np.repeat(users, len(MOVIE_IDS)), np.tile(MOVIE_IDS, len(users))
        pq.write_table(pa.table({"user_id": u, "movie_id": m}), pairs / f"part-{part}.parquet")
    path = folder / "job.toml"
    path.write_text(
        f'[job]\nname = "sig"\n[score]\nmodel = "{bundle}"\npairs = "pairs"\ntop_k = 5\n'
        'chunk_rows = 150\nout = "exports/{date}/top5.parquet"\n'
    )
    return path


def signal_mid_run(job: Path, sig: int, *extra: str) -> tuple[int, str]:
    """Start a slow run, send ``sig`` once a fragment is done; its exit code and stderr."""
    work = job.parent / "exports" / DATE / ".batchrank-work" / f"sig-{DATE}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRANK_")}
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")])
    errfile = job.parent / f"stderr-{sig}.log"
    with errfile.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_RUN, "run", str(job), "--date", DATE, *extra],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        try:
            deadline = time.monotonic() + 180
            while not list(work.glob("fragment-*.json")):
                assert proc.poll() is None, errfile.read_text()
                assert time.monotonic() < deadline, "no fragment finished in time"
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be signalled"
            proc.send_signal(sig)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.wait()
    return proc.returncode, errfile.read_text()


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TMP_MARK in p.name or p.name.endswith(".tmp")]


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_next_run_resumes(tmp_path: Path, tiny_bundle: Path) -> None:
    job = make_job(tmp_path, tiny_bundle)
    code, err = signal_mid_run(job, signal.SIGTERM)
    assert code == 143, err
    lines = err.strip().splitlines()
    assert [line for line in lines if "ERROR" in line or "SIGTERM" in line] == lines[-1:], err
    assert lines[-1].endswith(
        "ERROR stopped by SIGTERM (signal 15); temporary files removed, nothing published; "
        "run it again to resume"
    )
    assert leftovers(tmp_path) == []
    out = tmp_path / "exports" / DATE / "top5.parquet"
    assert not out.exists() and not (out.parent / "_SUCCESS").exists()
    work = tmp_path / "exports" / DATE / ".batchrank-work" / f"sig-{DATE}"
    done = len(list(work.glob("fragment-*.json")))
    assert 1 <= done < 6

    from batchrank.jobs.loader import load_job
    from batchrank.jobs.runner import run_job

    result = run_job(load_job(job, date=__import__("datetime").date(2025, 1, 31), environ={}))
    assert result.resumed and result.manifest["resume"]["fragments_resumed"] == done


@pytest.mark.slow
def test_sigint_in_json_mode_logs_run_failed(tmp_path: Path, tiny_bundle: Path) -> None:
    job = make_job(tmp_path, tiny_bundle)
    code, err = signal_mid_run(job, signal.SIGINT, "--log-format", "json")
    assert code == 130, err
    records = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    failed = records[-1]
    assert failed["event"] == "run_failed" and failed["signal"] == "SIGINT"
    assert failed["exit_code"] == 130 and failed["job"] == "sig" and failed["run_id"]
    assert [r for r in records if r["event"] == "run_failed"] == [failed]
    assert leftovers(tmp_path) == []


def test_exit_codes_of_signals_are_documented() -> None:
    assert {129, 130, 143} <= set(EXIT_CODES)
    assert "SIGTERM" in EXIT_CODES[143] and "SIGINT" in EXIT_CODES[130]
