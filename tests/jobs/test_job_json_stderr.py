"""`--log-format json`: every line on stderr is a JSON object, native libraries' lines too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchrank.cli.logging_options import logging_session

NATIVE_WRITE = """
import os, sys
from batchrank.cli.logging_options import logging_session
with logging_session("json"):
    os.write(2, b"I0000 00:00:1700000000.000000 1 cpu_client.cc:42] native info\\n")
    os.write(2, b"W1201 12:00:00.000000 1 saver.cc:9] native warning\\nno prefix, two ")
    os.write(2, b"writes\\n")
    print("python print to stderr", file=sys.stderr)
    import logging
    logging.getLogger("absl").warning("absl says hi")
os.write(2, b"after the session: raw again\\n")
"""


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRANK_")}
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    return env


def test_native_fd2_writes_become_json_events(tmp_path: Path) -> None:
    root = Path(__file__).parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", NATIVE_WRITE], capture_output=True, text=True, env=_env(root)
    )
    assert proc.returncode == 0, proc.stderr
    *lines, last = proc.stderr.splitlines()
    assert last == "after the session: raw again"  # fd 2 is restored
    records = [json.loads(line) for line in lines]
    by_message = {r["message"]: r for r in records}
    assert by_message["I0000 00:00:1700000000.000000 1 cpu_client.cc:42] native info"]["level"] == (
        "info"
    )
    assert by_message["W1201 12:00:00.000000 1 saver.cc:9] native warning"]["level"] == "warning"
    assert "no prefix, two writes" in by_message
    assert by_message["python print to stderr"]["event"] == "stderr"
    assert by_message["absl says hi"]["logger"] == "absl"


def test_in_process_sys_stderr_writes_are_wrapped(capsys: pytest.CaptureFixture[str]) -> None:
    with logging_session("json"):
        print("partial", end="", file=sys.stderr)
        print(" line\nsecond", file=sys.stderr)
    err = capsys.readouterr().err
    assert [json.loads(line)["message"] for line in err.splitlines()] == ["partial line", "second"]


NOISY_TRAIN = """
import os, sys
import batchrank.jobs.runner as runner

real = runner.train_step

def noisy(*args, **kwargs):
    # What TensorFlow's C++ logging and absl write to fd 2 when Keras saves a model.
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written "
                b"to STDERR\\n")
    os.write(2, b"I0000 00:00:1733000000.000000   42 cpu_feature_guard.cc:210] This TensorFlow "
                b"binary is optimized to use available CPU instructions\\n")
    return real(*args, **kwargs)

runner.train_step = noisy
from batchrank.cli.main import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_run_with_training_writes_only_json_to_stderr(tmp_path: Path) -> None:
    from tests.conftest import make_ratings

    make_ratings().write_parquet(tmp_path / "ratings.parquet")
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "json-train"\n'
        '[train]\nratings = "ratings.parquet"\npreset = "seed"\nepochs = 1\nout = "model"\n'
        'retrain = "always"\n'
        '[score]\npairs = "all"\ntop_k = 3\nout = "exports/{date}/top.parquet"\n'
    )
    root = Path(__file__).parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", NOISY_TRAIN, "run", str(job), "--log-format", "json"],
        capture_output=True,
        text=True,
        env=_env(root),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # every line parses
    events = [r["event"] for r in records]
    for event in ("run_start", "train_start", "train_done", "run_done"):
        assert event in events
    native = [r for r in records if r["event"] == "stderr"]
    assert any("cpu_feature_guard.cc" in r["message"] and r["level"] == "info" for r in native)
    assert any("absl::InitializeLog()" in r["message"] for r in native)
