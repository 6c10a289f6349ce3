"""Terminal escape sequences and other controls in titles, ids, paths and values are shown
escaped in everything printed for people (run's preview, error lines, log lines)."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.logs import setup_logging, teardown_logging
from batchrank.text import printable
from tests.jobs.test_job_run import run

CLEAR = "\x1b[2J\x1b[H"  # clear the screen, cursor home
TITLE = "\x1b]0;pwned\x07"  # OSC: set the window title
HOSTILE = [
    f"Clear{CLEAR}Screen (1999)",
    f"Window{TITLE}Title (2000)",
    "C1\x9b31mRed (2001)",  # 8-bit CSI
    "Bidi \u202egnp.exe (2002)",  # right-to-left override
    "Back\rspace\x08 and\x7fdel\nnewline (2003)",
    "Amélie ☃ 🎬 (2004)",  # ordinary Unicode stays as is
]
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r", "\x08", "\x7f")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in [k for k in os.environ if k.startswith("BATCHRANK_")]:
        monkeypatch.delenv(key)
    yield
    teardown_logging()


def assert_clean(text: str) -> None:
    for ch in RAW:
        assert ch not in text, repr(ch)


def test_printable_escapes_controls_and_keeps_unicode() -> None:
    assert printable(CLEAR) == "\\x1b[2J\\x1b[H"
    assert printable(TITLE) == "\\x1b]0;pwned\\x07"
    assert printable("a\x9bb\x85c") == "a\\x9bb\\x85c"
    assert printable("x\u202ey\u2066z\u200f") == "x\\u202ey\\u2066z\\u200f"
    assert printable("line\u2028sep\tTab\r\n") == "line\\u2028sep\\x09Tab\\x0d\\x0a"
    assert printable("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"
    assert printable("Amélie ☃ 🎬 日本 👨‍👩‍👧") == "Amélie ☃ 🎬 日本 👨‍👩‍👧"  # ZWJ kept
    assert printable(42) == "42"


def test_run_preview_escapes_titles(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import MOVIE_IDS, USER_IDS

    movies = MOVIE_IDS[: len(HOSTILE)]
    pq.write_table(pa.table({"movie_id": movies, "title": HOSTILE}), tmp_path / "items.parquet")
    users = USER_IDS[:3]
    pq.write_table(
        pa.table({"user_id": np.repeat(users, len(movies)), "movie_id": np.tile(movies, 3)}),
        tmp_path / "pairs.parquet",
    )
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "hostile"\npreview_users = 3\n[score]\nmodel = "{tiny_bundle}"\n'
        'pairs = "pairs.parquet"\nitems = "items.parquet"\ntop_k = 10\n'
        'out = "exports/{date}/top.parquet"\n'
    )
    assert run("run", str(job), "--date", "2025-01-31") == 0
    out, err = capsys.readouterr()
    assert_clean(out + err)
    assert "Clear\\x1b[2J\\x1b[HScreen (1999)" in out
    assert "Window\\x1b]0;pwned\\x07Title (2000)" in out
    assert "Bidi \\u202egnp.exe (2002)" in out
    assert "Amélie ☃ 🎬 (2004)" in out
    # the output file itself keeps the titles exactly
    titles = set(pq.read_table(tmp_path / "exports/2025-01-31/top.parquet")["title"].to_pylist())
    assert set(HOSTILE) <= titles


def test_error_lines_escape_file_names_and_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = tmp_path / f"job{CLEAR}{TITLE}.toml"
    assert run("validate", str(name)) == 2
    err = capsys.readouterr().err
    assert_clean(err)
    assert "job\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07.toml" in err
    assert len(err.strip().splitlines()) == 1
    # a click usage error naming a hostile value
    assert run("run", str(name), "--log-format", f"x{CLEAR}") == 2
    err = capsys.readouterr().err
    assert_clean(err)
    assert "x\\x1b[2J" in err


def test_human_log_lines_escape_and_json_lines_stay_json() -> None:
    human, js = io.StringIO(), io.StringIO()
    setup_logging("human", stream=human)
    logging.getLogger("batchrank.jobs").warning("title %s", HOSTILE[0])
    try:
        raise ValueError(f"boom{TITLE}")
    except ValueError:
        logging.getLogger("batchrank.jobs").exception("failed on %s", HOSTILE[1])
    text = human.getvalue()
    assert_clean(text)
    assert "title Clear\\x1b[2J\\x1b[HScreen (1999)" in text
    assert "ValueError: boom\\x1b]0;pwned\\x07" in text
    setup_logging("json", stream=js)
    logging.getLogger("batchrank.jobs").warning("title %s", HOSTILE[0])
    (line,) = js.getvalue().splitlines()
    assert_clean(line)
    assert json.loads(line)["message"] == f"title {HOSTILE[0]}"  # escaped by JSON, not altered
