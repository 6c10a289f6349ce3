"""Hostile side-feature tables: each mistake is one DataError line naming file, column and row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from batchrank.errors import ConfigError, DataError
from batchrank.feature_sources import load_side_tables
from batchrank.features import encode_side, read_feature_table
from batchrank.vocab import Vocabulary
from tests.jobs.test_job_run import run


def _csv(tmp_path: Path, text: str, name: str = "users.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(path: Path, id_column: str = "user_id", **kw: tuple[str, ...]) -> str:
    with pytest.raises(DataError) as e:
        read_feature_table(path, id_column, **kw)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_missing_id_column_names_the_column_and_what_was_found(tmp_path: Path) -> None:
    path = _csv(tmp_path, "uid,age\n1,20\n")
    assert "id column `user_id` missing; found `uid`, `age`" in _error(path)


def test_duplicate_ids_name_the_id_and_both_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,age\n1,20\n2,30\n1,40\n")
    assert "repeats id '1' (rows 1 and 3)" in _error(path)


def test_duplicate_ids_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pl.DataFrame({"user_id": [5, 6, 7, 6], "age": [1.0, 2.0, 3.0, 4.0]}).write_parquet(path)
    assert "repeats id 6 (rows 2 and 4)" in _error(path)


def test_a_word_in_a_numeric_column_names_its_row(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,age\n1,20\n2,31\n3,forty\n4,50\n")
    message = _error(path)
    assert "column `age` is numeric but row 3 has 'forty'" in message
    assert "--categorical" in message


def test_a_mostly_text_column_is_categorical_not_an_error(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,zip\n1,T8H1N\n2,V3N4P\n3,94043\n")
    assert read_feature_table(path, "user_id").kinds == {"zip": "categorical"}


def test_categorical_forces_a_numeric_looking_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,zip\n1,94043\n2,10001\n")
    assert read_feature_table(path, "user_id", categorical=("zip",)).kinds == {"zip": "categorical"}


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-Infinity"])
def test_nan_or_infinity_in_csv_is_refused_by_row(tmp_path: Path, value: str) -> None:
    path = _csv(tmp_path, f"user_id,age\n1,20\n2,{value}\n3,40\n")
    message = _error(path)
    assert "column `age` has" in message and "at row 2" in message
    assert "leave the cell empty for a missing value" in message


def test_nan_in_parquet_is_refused_but_null_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pl.DataFrame({"user_id": [1, 2, 3], "age": [20.0, float("nan"), 40.0]}).write_parquet(path)
    assert "column `age` has nan at row 2" in _error(path)
    pl.DataFrame({"user_id": [1, 2, 3], "age": [20.0, None, 40.0]}).write_parquet(path)
    enc = encode_side(
        read_feature_table(path, "user_id"), Vocabulary.build(pa.array([1, 2, 3]), where="t")
    )
    # the missing age is the mean: 0 once normalised, like the OOV row
    np.testing.assert_allclose(enc.dense[:, 0], [0.0, -1.0, 0.0, 1.0])


def test_a_missing_id_names_its_row(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,age\n1,20\n,30\n")
    assert "column `user_id` has a missing id at row 2" in _error(path)


def test_no_feature_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id\n1\n2\n")
    assert "no feature column besides `user_id`" in _error(path)


def test_a_column_of_an_unusable_type(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pl.DataFrame({"user_id": [1], "when": [dt.date(2020, 1, 1)]}).write_parquet(path)
    assert "column `when` has type Date" in _error(path)


def test_empty_and_headerless_and_missing_files(tmp_path: Path) -> None:
    assert "feature table has no rows" in _error(_csv(tmp_path, "user_id,age\n"))
    assert "feature table is empty" in _error(_csv(tmp_path, "", name="empty.csv"))
    assert "feature table not found" in _error(tmp_path / "nope.csv")
    assert "unknown feature table type '.json'" in _error(_csv(tmp_path, "{}", name="u.json"))


def test_ids_that_match_no_training_id(tmp_path: Path) -> None:
    table = read_feature_table(_csv(tmp_path, "user_id,age\nu1,20\nu2,30\n"), "user_id")
    with pytest.raises(DataError, match="no id matches the 3 ids of the ratings"):
        encode_side(table, Vocabulary.build(pa.array([1, 2, 3]), where="t"))


def test_categorical_naming_no_column_is_a_config_error(tmp_path: Path) -> None:
    users = _csv(tmp_path, "user_id,age\n1,20\n")
    with pytest.raises(ConfigError, match="--categorical zip: no column `zip` in"):
        load_side_tables(tmp_path / "r.csv", user_features=users, categorical=("zip",))


def test_the_cli_reports_a_bad_table_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ratings = _csv(tmp_path, "user_id,movie_id,rating\n1,1,5\n2,1,3\n1,2,4\n", "r.csv")
    users = _csv(tmp_path, "user_id,age\n1,20\n1,30\n")
    code = run(
        "train", "--ratings", str(ratings), "--preset", "features", "--user-features",
        str(users), "--out", str(tmp_path / "model"), "--quiet",
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert "repeats id '1' (rows 1 and 2)" in err and "Traceback" not in err
    assert not (tmp_path / "model").exists()
