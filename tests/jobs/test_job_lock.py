"""The job lock: an OS lock, one run per job, exit code 6 for the second."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.errors import LockedError
from batchrank.storage.lock import JobLock, lock_holder

HOLD = """
import sys, time
from pathlib import Path
from batchrank.storage.lock import JobLock
lock = JobLock(Path(sys.argv[1]), job="t", run_id="holder-run")
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _hold_in_subprocess(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "job.lock"
    with JobLock(path, job="t", run_id="first", date="2025-01-31") as first:
        assert first.held
        record = json.loads(path.read_text())
        assert record["run_id"] == "first" and record["pid"] == os.getpid()
        with pytest.raises(LockedError, match=r"job `t` is already running \(pid \d+") as info:
            JobLock(path, job="t").acquire()
        assert info.value.exit_code == 6
        assert "run first" in str(info.value)
        assert lock_holder(path) is not None
    assert lock_holder(path) is None
    with JobLock(path, job="t"):  # released: can be taken again
        pass


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "job.lock"
    proc = _hold_in_subprocess(path)
    try:
        assert (lock_holder(path) or {}).get("run_id") == "holder-run"
        with pytest.raises(LockedError, match="run holder-run"):
            JobLock(path, job="t").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert path.exists()  # a stale file is harmless: the kernel released the lock
    with JobLock(path, job="t"):
        pass


def test_a_second_run_process_exits_with_code_6(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    pq.write_table(pa.table({"user_id": [1], "movie_id": [2]}), tmp_path / "pairs.parquet")
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "locked"\n[score]\nmodel = "model"\npairs = "pairs.parquet"\n'
        'out = "out/{date}/top.parquet"\n'
    )
    lock_path = tmp_path / "out" / ".batchrank-locked.lock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRANK_")}
    with JobLock(lock_path, job="locked", run_id="the-first-run", date="2025-01-31"):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "batchrank.cli.main", "run", str(job), "--date", "2025-01-31"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        elapsed = time.monotonic() - started
    assert proc.returncode == 6, proc.stderr
    assert "batchrank: error: job `locked` is already running" in proc.stderr
    assert "run the-first-run" in proc.stderr
    assert not (tmp_path / "out" / "2025-01-31").exists()  # did nothing at all
    assert elapsed < 30  # at once: no model loaded, nothing imported beyond the job layer
