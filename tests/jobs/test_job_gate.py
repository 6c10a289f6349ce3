"""A job's [gate]: checked before publishing; a failed gate publishes nothing and exits 7."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.jobs.test_job_run import run

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gate-data")
    r = pl.read_csv(SAMPLE / "ratings.csv").sample(fraction=1.0, shuffle=True, seed=5)
    n = int(r.height * 0.8)
    r[:n].write_csv(folder / "train.csv")
    r[n:].write_csv(folder / "test.csv")
    return folder


def job_file(folder: Path, model: Path, data: Path, gate: str) -> Path:
    job = folder / "job.toml"
    job.write_text(
        f'[job]\nname = "gated"\n'
        f'[score]\nmodel = "{model}"\npairs = "all"\nout = "exports/{{date}}/top.parquet"\n'
        f'exclude = "{data / "train.csv"}"\n'
        f'[gate]\nratings = "{data / "test.csv"}"\n{gate}'
    )
    return job


def test_failed_gate_publishes_nothing_and_exits_7(
    sample_bundle: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(tmp_path, sample_bundle, data, "min_ndcg = 0.99\nmax_rmse = 0.01\n")
    assert run("run", str(job), "--date", "2025-01-31") == 7
    err = capsys.readouterr().err
    assert "quality gate failed" in err
    assert "NDCG@10 0." in err and "below min_ndcg 0.99 by 0." in err
    assert "RMSE" in err and "above max_rmse 0.01" in err
    exports = tmp_path / "exports"
    published = [p for p in exports.rglob("*") if p.is_file() and ".batchrank" not in str(p)]
    assert published == []


def test_gate_records_metrics_and_checks_the_drop_from_the_previous_run(
    sample_bundle: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(tmp_path, sample_bundle, data, "min_ndcg = 0.0001\nmax_drop = 0.02\n")
    assert run("run", str(job), "--date", "2025-01-30") == 0
    out = tmp_path / "exports" / "2025-01-30" / "top.parquet"
    manifest_path = out.with_name(out.name + ".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    gate = manifest["job"]["gate"]
    assert gate["previous"] is None and 0 < gate["metrics"]["ndcg"] <= 1
    # the same model again: no drop, it passes and sees the previous figures
    assert run("run", str(job), "--date", "2025-01-31") == 0
    second = tmp_path / "exports" / "2025-01-31" / "top.parquet"
    record = json.loads(second.with_name(second.name + ".manifest.json").read_text())["job"]["gate"]
    assert record["previous"]["ndcg"] == pytest.approx(gate["metrics"]["ndcg"])
    # a previous run that was better by 0.1: the next run's drop exceeds max_drop
    path2 = second.with_name(second.name + ".manifest.json")
    m2 = json.loads(path2.read_text())
    m2["job"]["gate"]["metrics"]["ndcg"] += 0.1
    path2.write_text(json.dumps(m2))
    capsys.readouterr()
    assert run("run", str(job), "--date", "2025-02-01") == 7
    err = capsys.readouterr().err
    assert "fell 0.1000 from the previous run's" in err and "max_drop 0.02" in err
    assert not (tmp_path / "exports" / "2025-02-01" / "top.parquet").exists()
    latest = (tmp_path / "exports" / "latest").read_text()
    assert "2025-01-31" in latest


def test_gate_that_checks_nothing_is_a_job_file_error(
    sample_bundle: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_file(tmp_path, sample_bundle, data, "k = 5\n")
    assert run("run", str(job), "--date", "2025-01-31") == 2
    assert "[gate] checks nothing" in capsys.readouterr().err
