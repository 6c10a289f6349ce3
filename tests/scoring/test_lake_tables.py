"""Lake tables: a nightly job writes Delta and Iceberg tables, one partition per date, one commit
per run, and the tables hold exactly the Parquet export's rows and types (plus ``run_date``)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.jobs.test_job_run import run

pytest.importorskip("deltalake")
pytest.importorskip("pyiceberg")

pytestmark = pytest.mark.lake

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
PAIRS = SAMPLE / "candidates.parquet"
DATES = ["2026-03-01", "2026-03-02", "2026-03-03"]
RERUN = "2026-03-02"


def job(
    folder: Path, model: Path, fmt: str, top_k: int = 5, table: str = "", out: str = "lake"
) -> Path:
    """A nightly job writing the sample export into ``<out>/recs-<fmt>`` (a folder or a URI)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{fmt}.toml"
    path.write_text(
        f'[job]\nname = "nightly-{fmt}"\n\n'
        f'[score]\nmodel = "{model}"\npairs = "{PAIRS}"\nout = "{out}/recs-{fmt}"\n'
        f'format = "{fmt}"\ntop_k = {top_k}\n\n[table]\n{table}',
        encoding="utf-8",
    )
    return path


def parquet_export(tmp_path: Path, model: Path, top_k: int) -> pl.DataFrame:
    out = tmp_path / f"ref-{top_k}.parquet"
    if not out.exists():
        args = ["score", "--model", str(model), "--pairs", str(PAIRS), "--out", str(out)]
        assert run(*args, "--top-k", str(top_k), "--quiet") == 0
    return pl.read_parquet(out)


def manifest(out: Path) -> dict[str, Any]:
    return json.loads(out.with_name(out.name + ".manifest.json").read_text())


def iceberg_table(out: Path) -> Any:
    from pyiceberg.catalog import load_catalog

    db = out.parent / "batchrank-catalog.db"
    catalog = load_catalog("batchrank", uri=f"sqlite:///{db}", warehouse=f"file://{out.parent}")
    return catalog.load_table(f"batchrank.{out.name}")


def read_table(fmt: str, out: Path) -> pl.DataFrame:
    if fmt == "delta":
        return pl.read_delta(str(out))
    frame = pl.from_arrow(iceberg_table(out).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


def history_run_ids(fmt: str, out: Path) -> list[str]:
    """The run id of each commit, oldest first."""
    if fmt == "delta":
        from deltalake import DeltaTable

        return [h["batchrank.run_id"] for h in reversed(DeltaTable(str(out)).history())]
    snaps = iceberg_table(out).snapshots()
    return [s.summary.additional_properties["batchrank.run_id"] for s in snaps]


def partition(frame: pl.DataFrame, date: str) -> pl.DataFrame:
    day = dt.date.fromisoformat(date)
    return frame.filter(pl.col("run_date") == day).drop("run_date").sort("user_id", "rank")


def assert_three_dates_and_a_rerun(
    table: pl.DataFrame, tmp_path: Path, model: Path
) -> pl.DataFrame:
    """The table holds the three dates, each exactly the Parquet export's rows and types (top 5;
    the re-run's top 3 for its date); returns the re-run's export."""
    five, three = parquet_export(tmp_path, model, 5), parquet_export(tmp_path, model, 3)
    assert sorted(table["run_date"].unique().to_list()) == [dt.date.fromisoformat(d) for d in DATES]
    for date in DATES:
        expected = three if date == RERUN else five
        got = partition(table, date)
        assert got.schema == expected.schema  # the long layout's columns and types, in order
        assert got.equals(expected.sort("user_id", "rank"))
    assert table.schema["run_date"] == pl.Date
    return three


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_job_three_dates_and_a_rerun(fmt: str, tmp_path: Path, sample_bundle: Path) -> None:
    path = job(tmp_path, sample_bundle, fmt)
    out = tmp_path / "lake" / f"recs-{fmt}"
    run_ids = []
    for date in DATES:
        assert run("run", str(path), "--date", date) == 0
        run_ids.append(manifest(out)["run_id"])
    # the re-run of one date, with other options: its partition is replaced, no other
    assert run("run", str(path), "--date", RERUN, "--set", "score.top_k=3") == 0
    rerun = manifest(out)
    run_ids.append(rerun["run_id"])

    three = assert_three_dates_and_a_rerun(read_table(fmt, out), tmp_path, sample_bundle)

    # one commit per run, each naming its run id; the manifest names the last one
    assert history_run_ids(fmt, out) == run_ids
    record = rerun["output"]["table"]
    assert record["partition"] == {"run_date": RERUN}
    assert record["commit"]["batchrank.run_id"] == rerun["run_id"]
    assert record["commit"]["batchrank.rows"] == str(three.height)
    if fmt == "delta":
        from deltalake import DeltaTable

        assert record["version"] == DeltaTable(str(out)).version() == 3
    else:
        current = iceberg_table(out).current_snapshot()
        assert record["snapshot_id"] == current.snapshot_id
        assert current.summary.additional_properties["batchrank.model_fingerprint"].startswith(
            "sha256:"
        )
    assert not (out.parent / "_SUCCESS").exists()  # the commit is the table's certificate


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_duckdb_reads_the_committed_files(fmt: str, tmp_path: Path, sample_bundle: Path) -> None:
    """DuckDB without extensions (they need the network): the Parquet files the current commit
    lists, with hive partitioning giving ``run_date`` back."""
    duckdb = pytest.importorskip("duckdb")
    path = job(tmp_path, sample_bundle, fmt)
    out = tmp_path / "lake" / f"recs-{fmt}"
    for date in (DATES[0], DATES[0], DATES[1]):  # a re-run leaves an unreferenced file behind
        assert run("run", str(path), "--date", date) == 0
    if fmt == "delta":
        from deltalake import DeltaTable

        files = DeltaTable(str(out)).file_uris()
    else:
        files = iceberg_table(out).inspect.files().column("file_path").to_pylist()
    files = [f.removeprefix("file://") for f in files]
    assert len(files) == 2
    con = duckdb.connect()
    result = con.execute(
        "SELECT * EXCLUDE (run_date), CAST(run_date AS DATE) AS run_date "
        "FROM read_parquet(?, hive_partitioning = true) ORDER BY run_date, user_id, rank",
        [files],
    )
    got = pl.from_arrow(result.to_arrow_table())
    assert isinstance(got, pl.DataFrame)
    five = parquet_export(tmp_path, sample_bundle, 5)
    assert got.height == 2 * five.height
    assert partition(got, DATES[1]).select(five.columns).equals(five.sort("user_id", "rank"))


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_append_mode_adds_rows_in_one_commit(fmt: str, tmp_path: Path, sample_bundle: Path) -> None:
    path = job(tmp_path, sample_bundle, fmt, table='mode = "append"\n')
    out = tmp_path / "lake" / f"recs-{fmt}"
    for _ in range(2):
        assert run("run", str(path), "--date", DATES[0]) == 0
    five = parquet_export(tmp_path, sample_bundle, 5)
    assert read_table(fmt, out).height == 2 * five.height
    assert len(history_run_ids(fmt, out)) == 2


def test_score_command_takes_date_and_table_options(tmp_path: Path, sample_bundle: Path) -> None:
    out = tmp_path / "t"
    args = ["score", "--model", str(sample_bundle), "--pairs", str(PAIRS), "--out", str(out)]
    opts = ["--format", "delta", "--table-partition-column", "day", "--quiet"]
    assert run(*args, *opts, "--date", "2026-04-01") == 0
    frame = pl.read_delta(str(out))
    assert frame.schema["day"] == pl.Date
    assert frame["day"].unique().to_list() == [dt.date(2026, 4, 1)]


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_maintain_expires_old_versions_and_keeps_the_rows(
    fmt: str, tmp_path: Path, sample_bundle: Path
) -> None:
    path = job(tmp_path, sample_bundle, fmt)
    out = tmp_path / "lake" / f"recs-{fmt}"
    for date in (DATES[0], DATES[0], DATES[1]):
        assert run("run", str(path), "--date", date) == 0
    before = read_table(fmt, out).sort("run_date", "user_id", "rank")
    data_files = lambda: sorted(p for p in out.rglob("*.parquet"))  # noqa: E731
    assert len(data_files()) == 3  # the replaced partition's old file is still there
    assert run("table", "maintain", "--out", str(out), "--format", fmt, "--retain-days", "0") == 0
    assert len(data_files()) == 2
    assert read_table(fmt, out).sort("run_date", "user_id", "rank").equals(before)
    if fmt == "iceberg":
        assert len(iceberg_table(out).snapshots()) == 1


@pytest.mark.ray
def test_ray_engine_writes_the_same_rows(
    ray_session: Any, tmp_path: Path, sample_bundle: Path
) -> None:
    base = ["score", "--model", str(sample_bundle), "--pairs", str(PAIRS), "--format", "delta"]
    for engine in ("local", "ray"):
        out = tmp_path / f"t-{engine}"
        assert run(*base, "--out", str(out), "--engine", engine, "--date", DATES[0], "--quiet") == 0
    local, ray = (
        pl.read_delta(str(tmp_path / f"t-{e}")).sort("user_id", "rank") for e in ("local", "ray")
    )
    assert ray.equals(local)
