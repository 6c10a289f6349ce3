"""Hostile: unsafe output paths, outputs read back as inputs, failed commits, concurrent runs.

Each test drives the real CLI (``batchrank score``) or the Python API on a real bundle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

import batchrank
from batchrank.errors import ConfigError, LockedError, OutputError
from batchrank.storage import LOCAL, CommitUnit, clean_leftovers
from batchrank.storage.lock import output_lock
from tests.jobs.test_job_run import run

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
CANDS = SAMPLE / "candidates.parquet"


def _score(bundle: Path, out: Path, *extra: str, pairs: str = str(CANDS)) -> int:
    return run(
        *["score", "--model", str(bundle), "--pairs", pairs, "--out", str(out), "--quiet", *extra]
    )


# -- targets that are not regular files -----------------------------------------------------


def test_fifo_as_rejects_is_refused_and_left_alone(
    sample_bundle: Path, tmp_path: Path, capsys
) -> None:
    fifo = tmp_path / "rejects.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "top.parquet"
    assert _score(sample_bundle, out, "--rejects", str(fifo)) == 2
    err = capsys.readouterr().err
    assert "FIFO" in err and str(fifo) in err and "Traceback" not in err
    assert fifo.is_fifo() and not out.exists()


def test_symlinked_out_is_refused_and_its_target_untouched(
    sample_bundle: Path, tmp_path: Path
) -> None:
    real = tmp_path / "real.parquet"
    real.write_bytes(b"keep me")
    link = tmp_path / "top.parquet"
    link.symlink_to(real)
    assert _score(sample_bundle, link) == 2
    assert link.is_symlink() and real.read_bytes() == b"keep me"


def test_device_is_never_replaced(tmp_path: Path) -> None:
    # /dev/null is a character device: staging beside it must be refused, never renamed onto.
    with pytest.raises(OutputError, match="device"):
        LOCAL.stage(Path("/dev/null"), "rejects")
    assert Path("/dev/null").is_char_device()


# -- outputs that are inputs, or would be read back as inputs -------------------------------


def test_out_equal_to_pairs_file_is_refused(sample_bundle: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "cands.parquet"
    pairs.write_bytes(CANDS.read_bytes())
    before = pairs.read_bytes()
    assert _score(sample_bundle, pairs, pairs=str(pairs)) == 2
    assert pairs.read_bytes() == before


def test_out_inside_pairs_folder_is_refused(sample_bundle: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cands.parquet").write_bytes(CANDS.read_bytes())
    assert _score(sample_bundle, data / "exports" / "top.csv", pairs=str(data)) == 2
    assert "lies under the --pairs folder" in capsys.readouterr().err
    assert not (data / "exports").exists()


def test_out_matching_pairs_glob_is_refused(sample_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "a.parquet").write_bytes(CANDS.read_bytes())
    assert _score(sample_bundle, tmp_path / "top.parquet", pairs=str(tmp_path / "*.parquet")) == 2


def test_out_in_bundle_or_equal_to_items_is_refused(sample_bundle: Path, tmp_path: Path) -> None:
    assert _score(sample_bundle, sample_bundle / "top.parquet") == 2
    items = tmp_path / "movies.csv"
    pl.read_parquet(SAMPLE / "movies.parquet").write_csv(items)
    before = items.read_bytes()
    assert _score(sample_bundle, items, "--items", str(items)) == 2
    assert items.read_bytes() == before


def test_rejects_equal_to_out_is_refused(sample_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "top.csv"
    assert _score(sample_bundle, out, "--rejects", str(out)) == 2
    assert not out.exists()


def test_explicit_files_that_exclude_the_output_are_fine(
    sample_bundle: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cands = data / "cands.parquet"
    cands.write_bytes(CANDS.read_bytes())
    assert _score(sample_bundle, data / "top.parquet", pairs=str(cands)) == 0


# -- a failed commit leaves the previous export whole ----------------------------------------


def test_failed_rerun_keeps_previous_output_and_manifest(
    sample_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "top.parquet"
    batchrank.score(model=sample_bundle, pairs=[CANDS], out=out, progress="none")
    manifest = out.with_name(out.name + ".manifest.json")
    before = (out.read_bytes(), manifest.read_bytes())
    # the manifest's name is taken by a folder: the commit fails after the output is staged
    manifest.unlink()
    manifest.mkdir()
    with pytest.raises((OutputError, ConfigError)):
        batchrank.score(model=sample_bundle, pairs=[CANDS], out=out, progress="none", top_k=3)
    assert out.read_bytes() == before[0]
    manifest.rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top.parquet"]


def test_commit_unit_rolls_back_every_rename(tmp_path: Path) -> None:
    a, b, cert = tmp_path / "a", tmp_path / "b", tmp_path / "cert"
    for p in (a, b, cert):
        p.write_text("old " + p.name)
    unit = CommitUnit()
    unit.withdraw(cert)
    sa, sb = LOCAL.stage(a), LOCAL.stage(b)
    sa.path.write_text("new a")
    sb.path.write_text("new b")

    class Boom(Exception):
        pass

    class Failing(type(sb)):  # type: ignore[misc]
        def commit(self):
            raise Boom

    sb.__class__ = Failing
    with pytest.raises(Boom):
        unit.commit([sa, sb])
    assert [p.read_text() for p in (a, b, cert)] == ["old a", "old b", "old cert"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "cert"]


# -- two runs, one output --------------------------------------------------------------------


def test_second_run_on_the_same_out_is_locked_out(sample_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "top.parquet"
    with output_lock(out), pytest.raises(LockedError, match="already running"):
        batchrank.score(model=sample_bundle, pairs=[CANDS], out=out, progress="none")
    assert not out.exists()
    assert _score(sample_bundle, out) == 0  # the lock went with its holder
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "top.parquet",
        "top.parquet.manifest.json",
    ]


def test_cleanup_spares_a_live_writers_temp_and_handles_glob_names(tmp_path: Path) -> None:
    target = tmp_path / "top[1].csv"
    live = LOCAL.stage(target)
    dead = tmp_path / ".top[1].csv.batchrank-tmp-0123456789ab"
    dead.write_text("from a killed run")
    removed = clean_leftovers(target)
    assert removed == [dead]
    assert live.path.exists()
    live.path.write_text("rows")
    live.commit().finalize()
    assert target.read_text() == "rows"


# -- compressed text outputs and formula injection -------------------------------------------


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.zst", ".jsonl.gz"])
def test_compressed_outputs_round_trip(sample_bundle: Path, tmp_path: Path, suffix: str) -> None:
    plain = tmp_path / ("top" + suffix.rsplit(".", 1)[0])
    packed = tmp_path / ("top" + suffix)
    assert _score(sample_bundle, plain) == 0
    assert _score(sample_bundle, packed) == 0
    import pyarrow as pa

    compression = "gzip" if suffix.endswith(".gz") else "zstd"
    with pa.input_stream(str(packed), compression=compression) as f:
        assert f.read() == plain.read_bytes()


def test_csv_titles_that_are_formulas_are_neutralised(sample_bundle: Path, tmp_path: Path) -> None:
    movies = pl.read_parquet(SAMPLE / "movies.parquet")
    hostile = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tTab"]
    movies = movies.with_columns(
        pl.Series("title", [hostile[i % len(hostile)] for i in range(movies.height)])
    )
    items = tmp_path / "items.parquet"
    movies.write_parquet(items)
    out = tmp_path / "top.csv"
    assert _score(sample_bundle, out, "--items", str(items)) == 0
    titles = pl.read_csv(out)["title"].to_list()
    assert titles and all(t.startswith("'") for t in titles)
    parquet = tmp_path / "top.parquet"
    assert _score(sample_bundle, parquet, "--items", str(items)) == 0
    assert set(pl.read_parquet(parquet)["title"]) <= set(hostile)  # only CSV is changed


def test_manifest_and_success_share_one_digest_format(sample_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "top.parquet"
    manifest = batchrank.score(model=sample_bundle, pairs=[CANDS], out=out, progress="none")
    digest = manifest["output"]["sha256"]
    assert len(digest) == 64 and int(digest, 16) >= 0
    on_disk = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert on_disk["output"]["sha256"] == digest


def test_a_pairs_folder_never_feeds_batchranks_own_exports_back(
    sample_bundle: Path, tmp_path: Path
) -> None:
    """Yesterday's export and rejects copied into the candidates folder are not candidates."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "cands.parquet").write_bytes(CANDS.read_bytes())
    elsewhere = tmp_path / "exports"
    first = elsewhere / "top.csv"
    assert (
        _score(sample_bundle, first, "--rejects", str(elsewhere / "rejects.csv"), pairs=str(data))
        == 0
    )
    for name in ("top.csv", "top.csv.manifest.json", "rejects.csv"):
        (data / name).write_bytes((elsewhere / name).read_bytes())
    again = tmp_path / "again" / "top.csv"
    assert _score(sample_bundle, again, pairs=str(data)) == 0
    assert again.read_bytes() == first.read_bytes()
    manifest = json.loads(again.with_name("top.csv.manifest.json").read_text())
    assert [Path(i["path"]).name for i in manifest["inputs"]] == ["cands.parquet"]
