"""Training for production (issue 16, item 2): ``--test-fraction 0`` trains on every rating,
``--test-ratings FILE`` evaluates on a separate held-out file and records that RMSE; both from
the command line and from a job file's ``[train]`` section."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from batchrank.evaluation import evaluate
from tests.conftest import TinyData
from tests.jobs.test_job_run import run


@pytest.fixture(scope="module")
def split_files(
    tiny_ratings: TinyData, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The tiny ratings as a train file (first 1200 rows) and a test file (the other 300)."""
    folder = tmp_path_factory.mktemp("split")
    frame = pl.read_parquet(tiny_ratings.ratings)
    train, test = folder / "train.parquet", folder / "test.csv"
    frame.head(1200).write_parquet(train)
    frame.tail(300).write_csv(test)
    return train, test


def _meta(bundle: Path) -> dict[str, object]:
    text = (bundle / "metadata.json").read_text()
    assert "NaN" not in text  # metadata.json stays strict JSON
    return json.loads(text)


def test_test_fraction_zero_trains_on_everything(
    tiny_ratings: TinyData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    code = run("train", "--ratings", str(tiny_ratings.ratings), "--out", str(out),
               "--test-fraction", "0", "--epochs", "2", "--quiet")  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    # train says which preset it picked and why, and which ratings early stopping watched
    assert "preset: default (no side features found" in printed
    assert (
        "no held-out test: trained on all 1500 ratings (150 of them the validation slice "
        "early stopping watches)" in printed
    )
    meta = _meta(out)
    metrics = meta["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["train_count"] == 1500 and metrics["test_count"] == 0
    assert metrics["validation_count"] == 150
    assert "test_rmse" not in metrics
    # the default preset's early stopping still watches its validation slice
    history = meta["history"]
    assert isinstance(history, dict) and "val_rmse" in history


def test_test_ratings_are_evaluated_and_recorded(
    split_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = split_files
    out = tmp_path / "model"
    code = run("train", "--ratings", str(train), "--test-ratings", str(test), "--out", str(out),
               "--preset", "seed", "--epochs", "2", "--quiet")  # fmt: skip
    assert code == 0
    stdout = capsys.readouterr().out
    metrics = _meta(out)["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["train_count"] == 1200  # no split: all of the train file
    assert metrics["test_count"] == 300 and metrics["test_source"] == str(test)
    assert f"(300 ratings of {test};" in stdout
    # the recorded RMSE is the bundle's RMSE on that file, as `batchrank evaluate` measures it
    again = evaluate(out, test)
    assert metrics["test_rmse"] == pytest.approx(again["rmse"], abs=1e-5)
    assert metrics["test_unknown_users"] == again["unknown_users"]


def test_a_split_and_a_test_file_are_one_too_many(
    split_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = split_files
    code = run("train", "--ratings", str(train), "--test-ratings", str(test),
               "--test-fraction", "0.2", "--out", str(tmp_path / "m"), "--quiet")  # fmt: skip
    assert code == 2
    assert "give one held-out set" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_job_file_train_section(
    split_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = split_files
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,movie_id\n" + "".join(f"{u},{m}\n" for u, m in [(10, 1000)]))
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "prod"\n[train]\nratings = "{train}"\ntest_ratings = "{test}"\n'
        'preset = "seed"\nepochs = 1\nout = "model"\n'
        f'[score]\nmodel = "model"\npairs = ["{pairs}"]\nout = "top.csv"\n'
    )
    assert run("validate", str(job)) == 0
    assert "test ratings" in capsys.readouterr().out
    assert run("run", str(job), "--date", "2025-01-31") == 0
    assert "trained: held-out RMSE " in capsys.readouterr().err
    metrics = _meta(tmp_path / "model")["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["test_source"] == str(test) and metrics["train_count"] == 1200
    # and test_fraction = 0 alone
    job.write_text(job.read_text().replace(f'test_ratings = "{test}"', "test_fraction = 0"))
    assert run("run", str(job), "--date", "2025-02-01", "--set", 'train.retrain="always"') == 0
    err = capsys.readouterr().err
    assert "trained: no held-out test (all 1200 ratings trained on)" in err
    assert "RMSE nan" not in err
    metrics = _meta(tmp_path / "model")["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["test_count"] == 0 and metrics["train_count"] == 1200
