"""Hostile lake tables: kill -9 at the commit, incompatible or foreign tables, missing catalogs,
a concurrent writer, and table options given where they do not apply."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from tests.jobs.test_job_run import run

pytest.importorskip("deltalake")
pytest.importorskip("pyiceberg")

pytestmark = pytest.mark.lake

ROOT = Path(__file__).resolve().parents[2]
PAIRS = ROOT / "sample_data" / "candidates.parquet"


def score_args(model: Path, out: Path, fmt: str, date: str = "2026-05-01") -> list[str]:
    return [
        "score",
        "--model",
        str(model),
        "--pairs",
        str(PAIRS),
        "--out",
        str(out),
        "--format",
        fmt,
        "--date",
        date,
        "--quiet",
    ]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("batchrank: error")]
    assert len(lines) == 1, lines
    return lines[0]


def catalog(out: Path) -> Any:
    from pyiceberg.catalog import load_catalog

    db = out.parent / "batchrank-catalog.db"
    return load_catalog("batchrank", uri=f"sqlite:///{db}", warehouse=f"file://{out.parent}")


def iceberg_create(out: Path, schema: pa.Schema) -> Any:
    """An Iceberg table made by someone else: ``schema``, partitioned by ``run_date``."""
    from pyiceberg.io.pyarrow import pyarrow_to_schema
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.table.name_mapping import MappedField, NameMapping
    from pyiceberg.transforms import IdentityTransform

    mapping = NameMapping(
        [MappedField(field_id=i, names=[f.name]) for i, f in enumerate(schema, 1)]
    )
    ice = pyarrow_to_schema(schema, name_mapping=mapping)
    source = ice.find_field("run_date").field_id
    spec = PartitionSpec(PartitionField(source, 1000, IdentityTransform(), "run_date"))
    cat = catalog(out)
    cat.create_namespace("batchrank")
    return cat.create_table("batchrank.recs", ice, location=f"file://{out}", partition_spec=spec)


def commits(fmt: str, out: Path) -> list[str | None]:
    """Run ids of the table's commits, oldest first ([] when there is no table)."""
    if fmt == "delta":
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(str(out)):
            return []
        return [h.get("batchrank.run_id") for h in reversed(DeltaTable(str(out)).history())]
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    if not (out.parent / "batchrank-catalog.db").exists():
        return []
    try:
        table = catalog(out).load_table(f"batchrank.{out.name}")
    except (NoSuchTableError, NoSuchNamespaceError):
        return []
    return [s.summary.additional_properties.get("batchrank.run_id") for s in table.snapshots()]


def data_files(out: Path) -> list[Path]:
    return sorted(out.rglob("*.parquet"))


KILL_AT_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from batchrank.scoring.tables.staged import TableStaged

    def die(self):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9: data files written, nothing committed

    TableStaged.commit = die
    from batchrank.cli.main import main
    main(sys.argv[1:])
    """
)


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
@pytest.mark.parametrize("first", [True, False], ids=["new-table", "existing-table"])
def test_kill_9_at_the_commit_leaves_no_commit(
    fmt: str, first: bool, tmp_path: Path, sample_bundle: Path
) -> None:
    out = tmp_path / "lake" / "recs"
    if not first:
        assert run(*score_args(sample_bundle, out, fmt, "2026-05-01")) == 0
    before = commits(fmt, out)
    files_before = data_files(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_COMMIT, *score_args(sample_bundle, out, fmt, "2026-05-02")],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert commits(fmt, out) == before  # the history shows nothing of the killed run
    orphans = sorted(set(data_files(out)) - set(files_before))
    assert orphans  # its data files exist, referenced by no commit
    assert all("run_date=2026-05-02" in str(p) for p in orphans)
    if not first:
        frame = pl.read_delta(str(out)) if fmt == "delta" else None
        if frame is not None:
            assert frame["run_date"].unique().to_list() == [dt.date(2026, 5, 1)]
        args = ["table", "maintain", "--out", str(out), "--format", fmt, "--retain-days", "0"]
        assert run(*args) == 0
        assert not any(p.exists() for p in orphans)  # maintenance removes them
    # the next run commits normally, over the leftovers (maintenance commits name no run)
    assert run(*score_args(sample_bundle, out, fmt, "2026-05-02")) == 0
    assert len([c for c in commits(fmt, out) if c]) == len(before) + 1


def test_incompatible_delta_table(
    tmp_path: Path, sample_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deltalake import write_deltalake

    out = tmp_path / "recs"
    rows = pa.table(
        {"user_id": ["a"], "rank": pa.array([1], pa.int32()), "run_date": [dt.date(2026, 1, 1)]}
    )
    write_deltalake(str(out), rows, partition_by=["run_date"])
    assert run(*score_args(sample_bundle, out, "delta")) == 5
    line = error_line(capsys)
    assert f"delta table {out}" in line and "'user_id' is string" in line and "int64" in line
    assert len(commits("delta", out)) == 1


def test_delta_table_partitioned_otherwise(
    tmp_path: Path, sample_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deltalake import write_deltalake

    out = tmp_path / "recs"
    write_deltalake(str(out), pa.table({"user_id": [1], "day": ["x"]}), partition_by=["day"])
    assert run(*score_args(sample_bundle, out, "delta")) == 5
    assert "is partitioned by ['day']" in error_line(capsys)


def test_incompatible_iceberg_table(
    tmp_path: Path, sample_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "recs"
    schema = pa.schema([("user_id", pa.int64()), ("rank", pa.int64()), ("run_date", pa.date32())])
    iceberg_create(out, schema)
    assert run(*score_args(sample_bundle, out, "iceberg")) == 5
    line = error_line(capsys)
    assert f"iceberg table {out}" in line and "'rank' is int64" in line


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_table_schema_evolution(fmt: str, tmp_path: Path, sample_bundle: Path) -> None:
    """A table that lacks a column batchrank writes (``title``) gets it; a nullable column
    batchrank does not write (a later version's ``segment``) reads as null in the new rows."""
    out = tmp_path / "recs"
    old = pa.schema(
        [
            ("user_id", pa.int64()),
            ("rank", pa.int32()),
            ("movie_id", pa.int64()),
            ("stars", pa.float32()),
            ("score", pa.float32()),
            ("segment", pa.string()),
            ("run_date", pa.date32()),
        ]
    )
    rows = pa.table(
        [[7], pa.array([1], pa.int32()), [1], pa.array([1.0], pa.float32()),
         pa.array([0.5], pa.float32()), ["vip"], [dt.date(2026, 1, 1)]],
        schema=old,
    )  # fmt: skip
    if fmt == "delta":
        from deltalake import write_deltalake

        write_deltalake(str(out), rows, partition_by=["run_date"])
    else:
        iceberg_create(out, old).append(rows)
    assert run(*score_args(sample_bundle, out, fmt, "2026-05-01")) == 0
    if fmt == "delta":
        frame = pl.read_delta(str(out))
    else:
        frame = pl.from_arrow(catalog(out).load_table("batchrank.recs").scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    new = frame.filter(pl.col("run_date") == dt.date(2026, 5, 1))
    assert new.height == 3000 and new["title"].null_count() < new.height
    assert new["segment"].null_count() == new.height
    assert frame.filter(pl.col("run_date") == dt.date(2026, 1, 1))["segment"].to_list() == ["vip"]


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_not_a_table(
    fmt: str, tmp_path: Path, sample_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    if fmt == "delta":
        assert run(*score_args(sample_bundle, folder, fmt)) == 5
        assert "is a folder that is not a Delta table" in error_line(capsys)
        assert (folder / "notes.txt").read_text() == "mine\n"
    file = tmp_path / "plain"
    file.write_text("x\n")
    assert run(*score_args(sample_bundle, file, fmt)) == 5
    assert f"{fmt} table {file}" in error_line(capsys)


def test_missing_catalog(
    tmp_path: Path, sample_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "recs"
    bad = ["--table-catalog-uri", f"sqlite:///{tmp_path}/no/such/folder/cat.db"]
    assert run(*score_args(sample_bundle, out, "iceberg"), *bad) == 5
    line = error_line(capsys)
    assert f"iceberg table {out}" in line and "catalog" in line
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    rest = ["--table-catalog-uri", f"http://127.0.0.1:{port}"]
    assert run(*score_args(sample_bundle, out, "iceberg"), *rest) == 5
    assert "catalog 'batchrank'" in error_line(capsys)
    assert not out.exists()


def test_iceberg_table_elsewhere(
    tmp_path: Path, sample_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a" / "recs", tmp_path / "b" / "recs"
    assert run(*score_args(sample_bundle, first, "iceberg")) == 0
    db = f"sqlite:///{first.parent / 'batchrank-catalog.db'}"
    assert run(*score_args(sample_bundle, second, "iceberg"), "--table-catalog-uri", db) == 5
    assert "lives at" in error_line(capsys)


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_concurrent_writer_fails_the_commit(
    fmt: str,
    tmp_path: Path,
    sample_bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another writer commits between this run's stage and its commit: the run fails naming the
    table (exit 5), its files are removed, the other writer's commit stands."""
    from batchrank.scoring.tables.staged import TableStaged

    out = tmp_path / "recs"
    assert run(*score_args(sample_bundle, out, fmt, "2026-05-01")) == 0
    first = commits(fmt, out)
    original = TableStaged.commit

    def other_writer_first(self: TableStaged) -> Any:
        if fmt == "delta":
            from deltalake import write_deltalake

            rows = pl.read_delta(str(out)).head(1).to_arrow()
            write_deltalake(str(out), rows, mode="append")
        else:
            table = catalog(out).load_table("batchrank.recs")
            table.append(table.scan(limit=1).to_arrow())
        return original(self)

    monkeypatch.setattr(TableStaged, "commit", other_writer_first)
    before = data_files(out)
    assert run(*score_args(sample_bundle, out, fmt, "2026-05-02")) == 5
    assert "another writer committed" in error_line(capsys)
    assert commits(fmt, out) == [*first, None]  # theirs, not ours
    assert len(data_files(out)) == len(before) + 1  # the other writer's file; ours are gone


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--date", "2026-01-01"], "--date applies to table outputs"),
        (["--format", "delta", "--table-catalog-uri", "sqlite:///x.db"], "applies to iceberg"),
        (["--format", "delta", "--table-partition-column", "rank"], "must be a column name"),
        (["--format", "delta", "--table-mode", "merge"], "--table-mode must be one of"),
        (["--format", "iceberg", "--layout", "nested"], "holds the long layout"),
    ],
)
def test_table_options_refused(
    extra: list[str],
    message: str,
    tmp_path: Path,
    sample_bundle: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / ("t.parquet" if extra[0] == "--date" else "t")
    args = ["score", "--model", str(sample_bundle), "--pairs", str(PAIRS), "--out", str(out)]
    assert run(*args, *extra) == 2
    assert message in error_line(capsys)


def test_table_section_needs_a_table_format(
    tmp_path: Path, sample_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "j.toml"
    job.write_text(
        f'[job]\nname = "j"\n[score]\nmodel = "{sample_bundle}"\npairs = "{PAIRS}"\n'
        'out = "x.parquet"\n[table]\nmode = "append"\n'
    )
    assert run("run", str(job)) == 2
    assert "[table] applies to [score] format" in error_line(capsys)
    job.write_text(
        f'[job]\nname = "j"\n[score]\nmodel = "{sample_bundle}"\npairs = "{PAIRS}"\n'
        'out = "lake/t"\nformat = "delta"\n[publish]\nsuccess_marker = true\n'
    )
    assert run("run", str(job)) == 2
    assert "[publish] success_marker" in error_line(capsys)


def test_iceberg_table_its_catalog_lost_is_refused(
    tmp_path: Path, sample_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalog file deleted: the folder still holds the table's metadata, so a new table
    there would hide its history; the run is refused (exit 5) and writes nothing."""
    out = tmp_path / "recs"
    assert run(*score_args(sample_bundle, out, "iceberg", "2026-05-01")) == 0
    (tmp_path / "batchrank-catalog.db").unlink()
    files = sorted(out.rglob("*"))
    assert run(*score_args(sample_bundle, out, "iceberg", "2026-05-02")) == 5
    line = error_line(capsys)
    newest = r"\(metadata/\d{5}-\S+\.metadata\.json\)"
    assert re.search(f"iceberg table {re.escape(str(out))}: holds an Iceberg table {newest}", line)
    assert "does not list" in line and "register_table" in line
    assert sorted(out.rglob("*")) == files
