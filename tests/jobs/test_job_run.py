"""`batchrank run` on a tiny bundle: publishing, training policies, resume after kill -9, logs."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.cli.main import main
from batchrank.jobs.loader import load_job
from batchrank.jobs.retrain import decide
from batchrank.logs import teardown_logging

N_USERS, N_MOVIES = 60, 40
USERS = np.arange(N_USERS) + 1000
MOVIES = np.arange(N_MOVIES) * 3 + 1


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("BATCHRANK_"):
            monkeypatch.delenv(key)
    yield
    teardown_logging()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small ratings and movies files."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(3)
    users = np.repeat(USERS, 15)
    movies = np.concatenate([rng.choice(MOVIES, 15, replace=False) for _ in USERS])
    ratings = rng.integers(1, 6, len(users)).astype(np.float64)
    pq.write_table(
        pa.table({"user_id": users, "movie_id": movies, "rating": ratings}),
        folder / "ratings.parquet",
    )
    titles = [f"Movie {m} (19{m % 100:02d})" for m in MOVIES]
    pq.write_table(pa.table({"movie_id": MOVIES, "title": titles}), folder / "movies.parquet")
    return folder


@pytest.fixture(scope="module")
def bundle(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny bundle for the module: preset seed, one epoch."""
    from batchrank.training import train

    out = tmp_path_factory.mktemp("models") / "tiny"
    train(
        data / "ratings.parquet",
        out,
        preset="seed",
        items=data / "movies.parquet",
        epochs=1,
        verbose=0,
    )
    return out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six pairs files (so six fragments), 400 rows each, a few unknown ids in the first."""
    folder = tmp_path_factory.mktemp("pairs")
    for part in range(6):
        users = USERS[part * 10 : (part + 1) * 10]
        u = np.repeat(users, N_MOVIES)
        m = np.tile(MOVIES, len(users))
        if part == 0:
            u[:3] = 99_999  # unknown users: skipped and counted
        pq.write_table(pa.table({"user_id": u, "movie_id": m}), folder / f"part-{part}.parquet")
    return folder


def job_file(
    folder: Path, bundle: Path, pairs: Path, data: Path, extra: str = "", **keys: str
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    values = {
        "name": '"tiny"',
        "model": f'"{bundle}"',
        "pairs": f'"{pairs}"',
        "items": f'"{data / "movies.parquet"}"',
        "top_k": "5",
        "out": '"exports/{date}/top5.parquet"',
        "chunk_rows": "150",
    }
    values.update(keys)
    text = f"[job]\nname = {values.pop('name')}\n{extra}\n[score]\n"
    text += "".join(f"{k} = {v}\n" for k, v in values.items())
    path = folder / "job.toml"
    path.write_text(text)
    return path


def run(*args: str) -> int:
    """``batchrank ARGS`` in this process; the exit code."""
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def manifest_of(output: Path) -> dict[str, Any]:
    return json.loads(output.with_name(output.name + ".manifest.json").read_text())


def test_run_scores_publishes_and_cleans_up(
    tmp_path: Path, bundle: Path, pairs: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(tmp_path, bundle, pairs, data, extra="preview_users = 2")
    assert run("run", str(job), "--date", "2025-01-31") == 0
    out = tmp_path / "exports" / "2025-01-31" / "top5.parquet"
    folder = out.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "_SUCCESS",
        "top5.parquet",
        "top5.parquet.manifest.json",
    ]  # the work folder is gone after the publish
    manifest = manifest_of(out)
    assert manifest["job"]["name"] == "tiny" and manifest["job"]["date"] == "2025-01-31"
    assert manifest["counts"]["users_written"] == N_USERS
    assert manifest["counts"]["rows_skipped_unknown_user"] == 3
    assert manifest["resume"] == {"fragments": 6, "fragments_resumed": 0}
    success = json.loads((folder / "_SUCCESS").read_text())
    assert [f["path"] for f in success["files"]] == ["top5.parquet", "top5.parquet.manifest.json"]
    assert success["run_id"] == manifest["run_id"]
    assert (tmp_path / "exports" / "latest").read_text() == "2025-01-31/top5.parquet\n"
    printed = capsys.readouterr().out
    assert f"top 5 for user {USERS[0]}:" in printed and "Movie " in printed and "★" in printed
    assert "_SUCCESS:" in printed and "latest:" in printed
    first = out.read_bytes()
    # a re-run of the same date is safe: same bytes, marker rewritten
    assert run("run", str(job), "--date", "2025-01-31", "--set", "job.preview_users=0") == 0
    assert out.read_bytes() == first
    assert (folder / "_SUCCESS").exists()


def test_run_id_in_the_output_path(tmp_path: Path, bundle: Path, pairs: Path, data: Path) -> None:
    job = job_file(tmp_path, bundle, pairs, data, out='"exports/{job}/{date}/{run_id}/top.jsonl"')
    assert run("run", str(job), "--date", "2025-02-01", "--quiet") == 0
    (run_folder,) = (tmp_path / "exports" / "tiny" / "2025-02-01").iterdir()
    out = run_folder / "top.jsonl"
    assert manifest_of(out)["run_id"] == run_folder.name
    assert (
        tmp_path / "exports" / "latest"
    ).read_text() == f"tiny/2025-02-01/{run_folder.name}/top.jsonl\n"
    assert not (tmp_path / "exports" / "tiny" / "2025-02-01" / ".batchrank-work").exists()


def test_json_logs_parse_line_by_line(
    tmp_path: Path, bundle: Path, pairs: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(tmp_path, bundle, pairs, data)
    assert run("run", str(job), "--date", "2025-01-31", "--log-format", "json") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    records = [json.loads(line) for line in captured.err.splitlines()]
    assert records
    for r in records:
        assert {"timestamp", "level", "run_id", "job", "event", "counts"} <= set(r)
    events = [r["event"] for r in records]
    for event in ("run_start", "score_start", "score_done", "run_done"):
        assert event in events
    run_id = manifest_of(tmp_path / "exports" / "2025-01-31" / "top5.parquet")["run_id"]
    batchrank_records = [r for r in records if r["logger"].startswith("batchrank")]
    assert {r["run_id"] for r in batchrank_records} == {run_id}
    assert {r["job"] for r in batchrank_records} == {"tiny"}
    done = records[events.index("run_done")]
    assert done["counts"]["users_written"] == N_USERS and done["counts"]["fragments"] == 6
    # failures are JSON too, with the exit code
    assert run("run", str(job), "--log-format", "json", "--set", "score.top_k=0") == 2
    (failed,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert failed["event"] == "run_failed" and failed["exit_code"] == 2
    assert (
        "[score] top_k (set by --set score.top_k=0) must be an integer in [1, 100000]"
        in failed["message"]
    )


def test_exit_codes_of_failing_runs(
    tmp_path: Path, bundle: Path, pairs: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(tmp_path / "a", bundle, pairs, data)
    assert run("run", str(job), "--set", "score.topk=3") == 2
    assert "unknown key `topk`" in capsys.readouterr().err
    assert run("run", str(job), "--date", "yesterday") == 2
    not_a_bundle = tmp_path / "not-a-bundle"
    not_a_bundle.mkdir()
    job = job_file(tmp_path / "b", not_a_bundle, pairs, data)
    assert run("run", str(job), "--quiet") == 4
    assert "not a batchrank model bundle" in capsys.readouterr().err
    bad_pairs = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"uid": [1], "movie_id": [1]}), bad_pairs)
    job = job_file(tmp_path / "c", bundle, bad_pairs, data)
    assert run("run", str(job), "--quiet") == 3
    assert "column `user_id` missing" in capsys.readouterr().err
    job = job_file(tmp_path / "d", bundle, pairs, data, out='"blocker/{date}/top.parquet"')
    (tmp_path / "d" / "blocker").write_text("a file where a folder should be")
    assert run("run", str(job), "--quiet") == 5


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--help") == 0
    text = capsys.readouterr().out
    assert "6  another run of the same job holds the lock" in text
    assert run("run", "--help") == 0
    assert "--fresh" in capsys.readouterr().out


def test_training_step_and_retrain_policies(tmp_path: Path, data: Path, pairs: Path) -> None:
    ratings = tmp_path / "ratings.parquet"
    ratings.write_bytes((data / "ratings.parquet").read_bytes())
    model = tmp_path / "models" / "trained"
    text = f"""
[job]
name = "trains"
[train]
ratings = "{ratings}"
items = "{data / "movies.parquet"}"
preset = "seed"
epochs = 1
out = "{model}"
retrain = "if-missing"
[score]
pairs = "{pairs}"
top_k = 3
out = "exports/{{date}}/top3.csv"
"""
    job_path = tmp_path / "job.toml"
    job_path.write_text(text)
    assert run("run", str(job_path), "--date", "2025-01-31", "--quiet") == 0
    manifest = manifest_of(tmp_path / "exports" / "2025-01-31" / "top3.csv")
    assert manifest["job"]["trained"] is True
    assert manifest["model"]["path"] == str(model)

    def decision(policy: str) -> str:
        job = load_job(job_path, overrides=[f"train.retrain={policy}"], environ={})
        assert job.train is not None
        d = decide(job.train)
        return ("train: " if d.train else "keep: ") + d.reason

    assert decision("if-missing") == "keep: the bundle exists and retrain = if-missing"
    assert decision("always") == 'train: retrain = "always"'
    assert decision("if-data-changed") == "keep: the ratings and settings are unchanged"
    job = load_job(
        job_path, overrides=["train.retrain=if-data-changed", "train.epochs=2"], environ={}
    )
    assert job.train is not None and decide(job.train).reason == "the training settings changed"
    table = pq.read_table(ratings)
    pq.write_table(table.slice(0, table.num_rows - 1), ratings)
    assert decision("if-data-changed") == "train: the ratings changed"
    meta = json.loads((model / "metadata.json").read_text())
    job = load_job(job_path, overrides=["train.retrain=always"], environ={})
    assert job.train is not None
    assert not decide(job.train, trained_by_this_run=meta["model_fingerprint"]).train


def test_fresh_discards_earlier_progress(
    tmp_path: Path, bundle: Path, pairs: Path, data: Path
) -> None:
    job = job_file(tmp_path, bundle, pairs, data)
    work = tmp_path / "exports" / "2025-01-31" / ".batchrank-work" / "tiny-2025-01-31"
    work.mkdir(parents=True)
    state = {"job": "tiny", "date": "2025-01-31", "run_id": "interrupted1"}
    (work / "run.json").write_text(json.dumps(state))
    (tmp_path / "exports" / "2025-01-31" / "_SUCCESS").write_text("stale")
    assert run("run", str(job), "--date", "2025-01-31", "--quiet") == 0
    out = tmp_path / "exports" / "2025-01-31" / "top5.parquet"
    assert manifest_of(out)["run_id"] == "interrupted1"  # adopted the interrupted run
    assert json.loads((out.parent / "_SUCCESS").read_text())["run_id"] == "interrupted1"
    work.mkdir(parents=True)
    (work / "run.json").write_text(json.dumps(state))
    assert run("run", str(job), "--date", "2025-01-31", "--quiet", "--fresh") == 0
    assert manifest_of(out)["run_id"] != "interrupted1"
    assert not work.exists()


SLOW_RUN = """
import sys, time
import batchrank.scoring.stage as stage

real = stage.map_ids

def slow(*args, **kwargs):
    time.sleep(0.3)
    return real(*args, **kwargs)

stage.map_ids = slow  # each chunk takes a while, so the test can kill the run mid-way
from batchrank.cli.main import main
main(sys.argv[1:])
"""


def kill_9_when(
    script: str,
    args: list[str],
    ready: Callable[[], bool],
    log: Path,
    env: dict[str, str] | None = None,
) -> None:
    """Run ``python -c script *args`` and kill -9 it once ``ready()``; it must not end first.

    ``env``: the run's environment (default: this one without ``BATCHRANK_*`` variables)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRANK_")}
    env = {**env, "JAX_PLATFORMS": "cpu"}
    with log.open("w") as f:
        cmd = [sys.executable, "-c", script, *args]
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 180
            while not ready():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "not ready in time"
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be killed"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_resume_after_kill_gives_the_uninterrupted_output(
    tmp_path: Path, bundle: Path, pairs: Path, data: Path
) -> None:
    job = job_file(tmp_path, bundle, pairs, data)
    work = tmp_path / "exports" / "2025-01-31" / ".batchrank-work" / "tiny-2025-01-31"
    kill_9_when(
        SLOW_RUN,
        ["run", str(job), "--date", "2025-01-31"],
        lambda: bool(list(work.glob("fragment-*.json"))),
        tmp_path / "killed.log",
    )
    done = len(list(work.glob("fragment-*.json")))
    assert 1 <= done < 6
    killed_run_id = json.loads((work / "run.json").read_text())["run_id"]
    out = tmp_path / "exports" / "2025-01-31" / "top5.parquet"
    assert not out.exists() and not (out.parent / "_SUCCESS").exists()

    assert run("run", str(job), "--date", "2025-01-31", "--quiet") == 0
    resumed = manifest_of(out)
    assert resumed["run_id"] == killed_run_id
    assert resumed["resume"] == {"fragments": 6, "fragments_resumed": done}
    assert not work.exists()

    assert run("run", str(job), "--date", "2025-02-01", "--quiet") == 0
    reference = tmp_path / "exports" / "2025-02-01" / "top5.parquet"
    assert manifest_of(reference)["resume"]["fragments_resumed"] == 0
    assert out.read_bytes() == reference.read_bytes()
    assert resumed["counts"] == manifest_of(reference)["counts"]


def test_today_is_the_default_date(tmp_path: Path, bundle: Path, pairs: Path, data: Path) -> None:
    job = job_file(tmp_path, bundle, pairs, data)
    assert run("run", str(job), "--quiet") == 0
    assert (tmp_path / "exports" / dt.date.today().isoformat() / "top5.parquet").exists()
