"""Hostile rule inputs: bad exclude, deny or allow files and values fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jobs.test_job_run import run


def score(bundle: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "score",
        "--model",
        str(bundle),
        "--pairs",
        "all",
        "--out",
        str(tmp_path / "o.parquet"),
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("user_id,movie_id\n1000,3\n,5\n", "row 2: null user id in an --exclude file"),
        ("user_id,movie_id\n1000,3\n1000,abc\n", "row 2: bad movie id in an --exclude file"),
        ("user,movie\n1000,3\n", "movie_id"),
    ],
)
def test_bad_exclude_file_is_a_data_error(
    sample_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    expected: str,
) -> None:
    ex = tmp_path / "ex.csv"
    ex.write_text(content)
    assert run(*score(sample_bundle, tmp_path, "--exclude", str(ex))) == 3
    err = capsys.readouterr().err
    assert expected in err and str(ex) in err and "Traceback" not in err
    assert not (tmp_path / "o.parquet").exists()


def test_missing_exclude_and_deny_files(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(*score(sample_bundle, tmp_path, "--exclude", str(tmp_path / "nope.csv"))) in (2, 3)
    assert "nope.csv" in capsys.readouterr().err
    bad = tmp_path / "deny.csv"
    bad.write_text("movie_id\n3\nxyz\n")
    assert run(*score(sample_bundle, tmp_path, "--deny-items", str(bad))) == 3
    assert "bad movie id 'xyz'" in capsys.readouterr().err


def test_min_stars_must_be_a_number(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(*score(sample_bundle, tmp_path, "--min-stars", "four")) == 2
    assert "--min-stars must be a finite number" in capsys.readouterr().err


def test_output_that_is_the_exclude_file_is_refused(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ex = tmp_path / "train.csv"
    ex.write_text("user_id,movie_id\n1000,3\n")
    args = [
        "score",
        "--model",
        str(sample_bundle),
        "--pairs",
        "all",
        "--out",
        str(ex),
        "--exclude",
        str(ex),
    ]
    assert run(*args) == 2
    assert "is the --exclude input; it would be overwritten" in capsys.readouterr().err
    assert ex.read_text() == "user_id,movie_id\n1000,3\n"
