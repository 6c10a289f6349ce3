"""Hostile job files: a byte-order mark, deep nesting, placeholders that would render wrongly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.cli.main import main
from batchrank.errors import ConfigError
from batchrank.jobs.jobspec import JobSpec
from batchrank.jobs.loader import load_job

DATE = dt.date(2025, 1, 31)
JOB = '[job]\nname = "t"\n[score]\nmodel = "m"\npairs = "p.parquet"\nout = "o/{date}/top.parquet"\n'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "m").mkdir()
    pq.write_table(pa.table({"user_id": [1], "movie_id": [2]}), tmp_path / "p.parquet")
    return tmp_path


def _write(folder: Path, text: str | bytes) -> Path:
    path = folder / "job.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _load(path: Path) -> JobSpec:
    return load_job(path, environ={}, date=DATE)


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        _load(path)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and len(msg) < 400, msg
    return msg


def test_a_utf8_byte_order_mark_is_accepted(folder: Path) -> None:
    job = _load(_write(folder, b"\xef\xbb\xbf" + JOB.encode()))
    assert job.name == "t"


@pytest.mark.parametrize(
    "nested",
    [
        "x = " + "[" * 5000 + "]" * 5000,
        "x = " + "{a = " * 5000 + "1" + "}" * 5000,
    ],
)
def test_toml_nested_5000_deep_is_one_line(
    folder: Path, nested: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(folder, JOB + nested + "\n")
    assert "nested too deeply" in _error(path)
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err


def test_deep_values_are_shown_short(folder: Path) -> None:
    msg = _error(_write(folder, JOB.replace("top_k", "x") + "top_k = " + "[" * 400 + "]" * 400))
    assert "[score] top_k must be an integer" in msg and msg.endswith(" ...")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("o/{job:d}/top.parquet", "placeholder {job:d} takes no format spec; write {job}"),
        ("o/{run_id:>8}/top.parquet", "placeholder {run_id:>8} takes no format spec"),
        ("o/{date:%Q}/top.parquet", "placeholder {date:%Q} has an unknown strftime code %Q"),
        (
            "o/{date:YYYY-MM-DD}/top.parquet",
            "placeholder {date:YYYY-MM-DD} has no strftime date code",
        ),
        ("o/{date:%H%M}/top.parquet", "placeholder {date:%H%M} has no strftime date code"),
        ("o/{date!r}/top.parquet", "placeholder {date!r} has a conversion"),
        ("o/{date:{job}}/top.parquet", "placeholder {date:{job}} has an unknown strftime code"),
    ],
)
def test_placeholders_that_would_render_wrongly_are_refused_at_load(
    folder: Path, template: str, expected: str
) -> None:
    msg = _error(_write(folder, JOB.replace("o/{date}/top.parquet", template)))
    assert f"[score] out: {expected}" in msg
    assert msg.endswith(f"; received '{template}'")


def test_bad_placeholders_in_other_keys_name_the_key(folder: Path) -> None:
    text = JOB + 'rejects = "o/{date:%Y}/{job:s}.csv"\n'
    assert "[score] rejects: placeholder {job:s} takes no format spec" in _error(
        _write(folder, text)
    )
    text = JOB.replace('name = "t"\n', 'name = "t"\nlock_dir = "locks/{job:d}"\n')
    assert "[job] lock_dir: placeholder {job:d} takes no format spec" in _error(
        _write(folder, text)
    )


@pytest.mark.parametrize(
    "template", ["o/{date:%Y/%m/%d}/top.parquet", "o/{date:%Y%m%d}-{job}/top.parquet"]
)
def test_strftime_date_specs_work(folder: Path, template: str) -> None:
    job = _load(_write(folder, JOB.replace("o/{date}/top.parquet", template)))
    assert "2025" in str(job.output("r"))
    assert "%" not in str(job.output("r"))


def test_train_paths_refuse_unsupported_uris(folder: Path) -> None:
    text = JOB.replace("[score]", '[train]\nratings = "ftp://b/ratings.csv"\nout = "m"\n[score]')
    msg = _error(_write(folder, text))
    assert "[train] ratings ftp://b/ratings.csv`: unsupported URI scheme ftp://" in msg
    text = JOB.replace(
        "[score]", '[train]\nratings = "tfds:movielens/100k-ratings"\nout = "m"\n[score]'
    )
    assert _load(_write(folder, text)).train is not None
