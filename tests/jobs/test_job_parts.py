"""Jobs whose output is a folder of parts: `_SUCCESS`, `latest`, the summary, validate, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchrank.scoring.parts import list_parts
from batchrank.storage import sha256_file
from tests.jobs.test_job_run import (  # noqa: F401 (_clean_env: an autouse fixture)
    SLOW_RUN,
    _clean_env,
    kill_9_when,
    run,
)

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample candidates as six files (six fragments), split by user."""
    folder = tmp_path_factory.mktemp("pairs")
    table = pq.read_table(SAMPLE / "candidates.parquet").sort_by("user_id")
    step = -(-table.num_rows // 6)
    for i in range(6):
        pq.write_table(table.slice(i * step, step), folder / f"cands-{i}.parquet")
    return folder


def job_file(folder: Path, bundle: Path, pairs: Path, **keys: str) -> Path:
    values = {
        "model": f'"{bundle}"',
        "pairs": f'"{pairs}"',
        "items": f'"{SAMPLE / "movies.parquet"}"',
        "out": '"exports/{date}/top.parquet"',
        "max_rows_per_file": "1000",
        "chunk_rows": "1000",
        **keys,
    }
    path = folder / "job.toml"
    path.write_text(
        '[job]\nname = "parts"\npreview_users = 2\n[score]\n'
        + "".join(f"{k} = {v}\n" for k, v in values.items())
    )
    return path


def test_success_and_latest_name_the_folder_and_its_parts(
    sample_bundle: Path, pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(tmp_path, sample_bundle, pairs)
    assert run("run", str(job), "--date", "2025-01-31") == 0
    day = tmp_path / "exports" / "2025-01-31"
    out = day / "top.parquet"
    assert sorted(p.name for p in day.iterdir()) == [
        "_SUCCESS",
        "top.parquet",
        "top.parquet.manifest.json",
    ]
    success = json.loads((day / "_SUCCESS").read_text())
    names = [f["path"] for f in success["files"]]
    assert names == [f"top.parquet/part-0000{i}.parquet" for i in range(3)] + [
        "top.parquet.manifest.json"
    ]
    for f in success["files"]:
        assert (f["sha256"], f["bytes"]) == sha256_file(day / f["path"])
    assert (tmp_path / "exports" / "latest").read_text() == "2025-01-31/top.parquet\n"
    printed = capsys.readouterr().out
    assert "top.parquet/ (a folder of 3 part files)" in printed
    assert "top 10 for user 1000:" in printed  # the preview reads the parts
    # a re-run for the date with fewer parts: _SUCCESS and the folder agree, nothing stale
    assert (
        run("run", str(job), "--date", "2025-01-31", "--set", "score.max_rows_per_file=2000") == 0
    )
    success = json.loads((day / "_SUCCESS").read_text())
    assert [f["path"] for f in success["files"]][:-1] == [
        "top.parquet/part-00000.parquet",
        "top.parquet/part-00001.parquet",
    ]
    assert [p.name for p in list_parts(out)] == ["part-00000.parquet", "part-00001.parquet"]


def test_validate_mentions_the_folder_and_refuses_a_foreign_one(
    sample_bundle: Path, pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(tmp_path, sample_bundle, pairs)
    assert run("validate", str(job), "--date", "2025-01-31") == 0
    out = capsys.readouterr().out
    assert "top.parquet is a folder of part files (part-00000.parquet, ...) of at most" in out
    assert "1,000 rows each, users never split" in out
    foreign = tmp_path / "exports" / "2025-01-31" / "top.parquet"
    foreign.mkdir(parents=True)
    (foreign / "theirs.csv").write_text("keep")
    assert run("validate", str(job), "--date", "2025-01-31") == 2
    assert "is a folder batchrank did not write" in capsys.readouterr().err
    assert run("run", str(job), "--date", "2025-01-31", "--quiet") == 2
    assert "is a folder batchrank did not write" in capsys.readouterr().err
    assert sorted(os.listdir(foreign)) == ["theirs.csv"]


def test_resume_after_kill_writes_the_uninterrupted_parts(
    sample_bundle: Path, pairs: Path, tmp_path: Path
) -> None:
    job = job_file(tmp_path, sample_bundle, pairs, max_rows_per_file="700")
    work = tmp_path / "exports" / "2025-01-31" / ".batchrank-work" / "parts-2025-01-31"
    kill_9_when(
        SLOW_RUN,
        ["run", str(job), "--date", "2025-01-31", "--quiet"],
        lambda: bool(list(work.glob("fragment-*.json"))),
        tmp_path / "killed.log",
    )
    out = tmp_path / "exports" / "2025-01-31" / "top.parquet"
    assert not out.exists()
    assert run("run", str(job), "--date", "2025-01-31", "--quiet") == 0
    manifest = json.loads(out.with_name("top.parquet.manifest.json").read_text())
    assert manifest["resume"]["fragments_resumed"] >= 1
    assert run("run", str(job), "--date", "2025-02-01", "--quiet") == 0
    reference = tmp_path / "exports" / "2025-02-01" / "top.parquet"
    assert [p.read_bytes() for p in list_parts(out)] == [
        p.read_bytes() for p in list_parts(reference)
    ]
    assert len(list_parts(out)) == 5
