"""Hostile: folders of parts (``--max-rows-per-file``) against kills, re-runs and wrong targets.

A kill -9 mid-write leaves the previous folder (or nothing) at the target, a re-run with fewer
parts leaves no stale part visible, and the run never replaces what is not its own: a file, a
link, someone else's folder, or a folder holding its inputs. Every refusal is exit 2 before
any work, naming the path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from batchrank.bundle import load_bundle
from batchrank.scoring.parts import PART_MARKER, list_parts
from batchrank.storage import TMP_MARK
from tests.jobs.test_job_run import kill_9_when, run

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
CANDS = SAMPLE / "candidates.parquet"


def _score(bundle: Path, out: Path, *extra: str, pairs: str = str(CANDS)) -> int:
    argv = ["score", "--model", str(bundle), "--pairs", pairs, "--out", str(out), "--quiet"]
    return run(*argv, *extra)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


SLOW_PARTS = """
import sys, time
import batchrank.scoring.parts as parts

real = parts.PartWriter._roll

def slow(self):
    real(self)
    time.sleep(0.4)

parts.PartWriter._roll = slow  # each part takes a while, so the test can kill the run mid-way
from batchrank.cli.main import main
main(sys.argv[1:])
"""


def test_kill_9_mid_write_leaves_the_previous_folder_whole(
    sample_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "top.parquet"
    assert _score(sample_bundle, out, "--max-rows-per-file", "1500") == 0
    before = _snapshot(out)
    manifest = (tmp_path / "top.parquet.manifest.json").read_bytes()
    argv = ["score", "--model", str(sample_bundle), "--pairs", str(CANDS), "--out", str(out)]
    kill_9_when(
        SLOW_PARTS,
        [*argv, "--max-rows-per-file", "100", "--quiet"],
        lambda: bool(list(tmp_path.glob(f".top.parquet{TMP_MARK}*/part-00002.parquet"))),
        tmp_path.parent / f"{tmp_path.name}-killed.log",
    )
    # the target is the previous export, whole; the dead run's folder is hidden beside it
    assert _snapshot(out) == before
    assert (tmp_path / "top.parquet.manifest.json").read_bytes() == manifest
    (leftover,) = tmp_path.glob(f".top.parquet{TMP_MARK}*")
    assert len(list_parts(leftover)) >= 3
    # the next run removes it and publishes its own folder
    assert _score(sample_bundle, out, "--max-rows-per-file", "100") == 0
    assert not leftover.exists()
    assert len(list_parts(out)) == 30
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".top")) == []


def test_kill_9_of_a_first_run_leaves_nothing_at_the_target(
    sample_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "top.csv"
    argv = ["score", "--model", str(sample_bundle), "--pairs", str(CANDS), "--out", str(out)]
    kill_9_when(
        SLOW_PARTS,
        [*argv, "--max-rows-per-file", "100", "--quiet"],
        lambda: bool(list(tmp_path.glob(f".top.csv{TMP_MARK}*/part-00001.csv"))),
        tmp_path.parent / f"{tmp_path.name}-killed.log",
    )
    assert not out.exists() and not (tmp_path / "top.csv.manifest.json").exists()
    # discovery of the folder never reads the dead run's hidden parts
    assert all(p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_rerun_with_fewer_parts_leaves_no_stale_part(sample_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "top.jsonl"
    assert _score(sample_bundle, out, "--max-rows-per-file", "200") == 0
    assert len(list_parts(out)) == 15
    assert _score(sample_bundle, out, "--max-rows-per-file", "2000") == 0
    assert [p.name for p in list_parts(out)] == ["part-00000.jsonl", "part-00001.jsonl"]
    assert sorted(os.listdir(out)) == [PART_MARKER, "part-00000.jsonl", "part-00001.jsonl"]
    manifest = json.loads((tmp_path / "top.jsonl.manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == [
        "top.jsonl/part-00000.jsonl",
        "top.jsonl/part-00001.jsonl",
    ]
    assert sorted(os.listdir(tmp_path)) == ["top.jsonl", "top.jsonl.manifest.json"]


def test_a_file_where_the_folder_should_be_is_refused(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "top.parquet"
    out.write_bytes(b"someone's file")
    assert _score(sample_bundle, out, "--max-rows-per-file", "100") == 2
    err = capsys.readouterr().err
    assert f"--out {out} is a file" in err and "folder of part files" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"someone's file"
    assert sorted(os.listdir(tmp_path)) == ["top.parquet"]


def test_someone_elses_folder_is_refused_and_left_alone(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "top.parquet"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"their data")
    (out / "notes.txt").write_text("keep")
    assert _score(sample_bundle, out, "--max-rows-per-file", "100") == 2
    err = capsys.readouterr().err
    assert f"--out {out} is a folder batchrank did not write" in err and PART_MARKER in err
    assert _snapshot(out) == {"part-00000.parquet": b"their data", "notes.txt": b"keep"}
    # without the option, a folder at --out is refused as well
    assert _score(sample_bundle, out) == 2
    assert "--out is a folder" in capsys.readouterr().err
    # an empty folder holds nobody's data: it is used
    empty = tmp_path / "empty.parquet"
    empty.mkdir()
    assert _score(sample_bundle, empty, "--max-rows-per-file", "1000") == 0
    assert len(list_parts(empty)) == 3


def test_a_symlink_at_out_is_refused_and_its_target_untouched(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / PART_MARKER).write_text("{}")  # even a folder that looks like ours
    link = tmp_path / "top.parquet"
    link.symlink_to(real)
    assert _score(sample_bundle, link, "--max-rows-per-file", "100") == 2
    assert "symbolic link" in capsys.readouterr().err
    assert link.is_symlink() and sorted(os.listdir(real)) == [PART_MARKER]


def test_inputs_inside_the_out_folder_are_refused(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "top.parquet"
    assert _score(sample_bundle, out, "--max-rows-per-file", "1000") == 0
    before = _snapshot(out)
    part = out / "part-00000.parquet"
    assert _score(sample_bundle, out, "--max-rows-per-file", "1000", pairs=str(part)) == 2
    assert f"--pairs {part} lies in the --out folder {out}" in capsys.readouterr().err
    items = out / "part-00001.parquet"
    assert _score(sample_bundle, out, "--max-rows-per-file", "10", "--items", str(items)) == 2
    assert f"--items {items} lies in the --out folder" in capsys.readouterr().err
    pattern = str(tmp_path / "*" / "*.parquet")  # would read the parts back next time
    assert _score(sample_bundle, out, "--max-rows-per-file", "10", pairs=pattern) == 2
    assert "matches the --pairs pattern" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_n_equal_1_gives_one_user_per_part(sample_bundle: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    vocab = load_bundle(sample_bundle, model=False).users
    ids = vocab.id_at(np.arange(1, 8) * 11).to_pylist()  # 7 users of the model
    users.write_text("user_id\n" + "".join(f"{u}\n" for u in ids))
    out = tmp_path / "top.parquet"
    argv = ["--users", str(users), "--top-k", "3", "--max-rows-per-file", "1"]
    assert _score(sample_bundle, out, *argv, pairs="all") == 0
    parts = list_parts(out)
    assert len(parts) == len(ids)
    got = [pq.read_table(p).column("user_id").to_pylist() for p in parts]
    assert got == [[u] * 3 for u in sorted(ids)]  # each part: one user's 3 rows (over N=1)
    manifest = json.loads((tmp_path / "top.parquet.manifest.json").read_text())
    assert [(f["rows"], f["users"]) for f in manifest["files"]] == [(3, 1)] * len(ids)
    nested = tmp_path / "top.jsonl"
    argv = [*argv, "--layout", "nested"]
    assert _score(sample_bundle, nested, *argv, pairs="all") == 0
    assert [len(p.read_text().splitlines()) for p in list_parts(nested)] == [1] * len(ids)


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "1e6", "ten", ""])
def test_absurd_limits_are_config_errors(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    out = tmp_path / "top.parquet"
    assert _score(sample_bundle, out, "--max-rows-per-file", value) == 2
    err = capsys.readouterr().err
    assert "--max-rows-per-file must be an integer >= 1" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_absurd_limit_in_a_job_file_names_the_key(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "j"\n[score]\nmodel = "{sample_bundle}"\npairs = "{CANDS}"\n'
        'out = "exports/{date}/top.parquet"\nmax_rows_per_file = 0\n'
    )
    assert run("run", str(job), "--quiet") == 2
    err = capsys.readouterr().err
    assert "[score] max_rows_per_file must be an integer >= 1; received 0" in err
    assert not (tmp_path / "exports").exists()
