"""Hostile: job files whose outputs would clobber or be read back as inputs fail before work."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.jobs.test_job_run import run

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def test_export_under_the_pairs_folder_fails_before_training(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cands.parquet").write_bytes((SAMPLE / "candidates.parquet").read_bytes())
    job = tmp_path / "job.toml"
    job.write_text(
        textwrap.dedent(
            f"""
            [job]
            name = "loop"
            [train]
            ratings = "{SAMPLE / "ratings.parquet"}"
            out = "model"
            [score]
            pairs = "data"
            out = "data/exports/{{date}}/top.csv"
            """
        )
    )
    assert run("run", str(job), "--date", "2025-01-31") == 2
    err = capsys.readouterr().err
    assert "lies under the --pairs folder" in err
    assert not (tmp_path / "model").exists()  # nothing was trained
    assert not (data / "exports").exists()


def test_latest_that_is_a_folder_fails_before_work(
    sample_bundle: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "exports" / "latest").mkdir(parents=True)
    job = tmp_path / "job.toml"
    job.write_text(
        textwrap.dedent(
            f"""
            [job]
            name = "latest"
            [score]
            model = "{sample_bundle}"
            pairs = "{SAMPLE / "candidates.parquet"}"
            out = "exports/{{date}}/top.parquet"
            """
        )
    )
    assert run("run", str(job), "--date", "2025-01-31") == 2
    assert "latest" in capsys.readouterr().err
    assert not (tmp_path / "exports" / "2025-01-31" / "top.parquet").exists()
