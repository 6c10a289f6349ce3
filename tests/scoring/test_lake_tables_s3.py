"""Lake tables on an object store (moto's S3 server): a nightly job keeps a Delta and an Iceberg
table on ``s3://``, one partition per date and one commit per run, holding exactly the Parquet
export's rows and types; readers reach them with the same endpoint settings."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from tests.jobs.test_job_run import run
from tests.s3server import CREDENTIALS
from tests.scoring.test_lake_tables import DATES, RERUN, assert_three_dates_and_a_rerun, job

pytest.importorskip("deltalake")
pytest.importorskip("pyiceberg")

pytestmark = pytest.mark.lake


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default Iceberg catalog of an S3 table and the run's lock live under the cache."""
    monkeypatch.setenv("BATCHRANK_CACHE_DIR", str(tmp_path / "cache"))


def delta_options(server: Any) -> dict[str, str]:
    """What a reader of the table passes to delta-rs (credentials come from the environment)."""
    return {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
    }


def delta_commits(server: Any, uri: str) -> list[dict[str, Any]]:
    """The commit info of each entry of a Delta log on S3, oldest first, read as objects
    (``DeltaTable.history()`` holds the GIL that the in-process S3 server needs)."""
    bucket = uri.removeprefix("s3://").split("/")[0]
    keys = [k for k in server.keys(f"{uri}/_delta_log/") if k.endswith(".json")]
    return [
        json.loads(line)["commitInfo"]
        for key in keys
        for line in server.get(f"s3://{bucket}/{key}").splitlines()
        if line.startswith(b'{"commitInfo"')
    ]


def manifest(server: Any, uri: str) -> dict[str, Any]:
    text = server.get(f"{uri}.manifest.json").decode()
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in text
    record: dict[str, Any] = json.loads(text)
    return record


def iceberg_table(server: Any, record: dict[str, Any]) -> Any:
    """The table through the catalog the manifest names (the default: a local SQLite file)."""
    from pyiceberg.catalog import load_catalog

    table = record["output"]["table"]
    assert table["catalog_uri"].startswith("sqlite:///")
    catalog = load_catalog(
        table["catalog"], uri=table["catalog_uri"], **{"s3.endpoint": server.endpoint}
    )
    return catalog.load_table(table["identifier"])


def read_back(fmt: str, server: Any, uri: str, record: dict[str, Any]) -> pl.DataFrame:
    if fmt == "delta":
        return pl.read_delta(uri, storage_options=delta_options(server))
    frame = pl.from_arrow(iceberg_table(server, record).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


def history(fmt: str, server: Any, uri: str, record: dict[str, Any]) -> list[str]:
    """The run id of each commit, oldest first."""
    if fmt == "delta":
        return [c.get("batchrank.run_id", "") for c in delta_commits(server, uri)]
    snaps = iceberg_table(server, record).snapshots()
    return [s.summary.additional_properties["batchrank.run_id"] for s in snaps]


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_job_three_dates_and_a_rerun_on_s3(
    fmt: str,
    s3: str,
    s3_server: Any,
    tmp_path: Path,
    sample_bundle: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = job(tmp_path, sample_bundle, fmt, out=f"{s3}/lake")
    uri = f"{s3}/lake/recs-{fmt}"
    run_ids = []
    for date in DATES:
        assert run("run", str(path), "--date", date) == 0
        run_ids.append(manifest(s3_server, uri)["run_id"])
    assert run("run", str(path), "--date", RERUN, "--set", "score.top_k=3") == 0
    rerun = manifest(s3_server, uri)
    run_ids.append(rerun["run_id"])

    table = read_back(fmt, s3_server, uri, rerun)
    assert_three_dates_and_a_rerun(table, tmp_path, sample_bundle)  # the export's rows and types

    assert history(fmt, s3_server, uri, rerun) == run_ids  # one commit per run
    record = rerun["output"]["table"]
    assert record["location"] == uri and rerun["output"]["path"] == uri
    assert record["commit"]["batchrank.run_id"] == rerun["run_id"]
    if fmt == "delta":
        assert record["version"] == 3
    else:
        assert (
            record["snapshot_id"] == iceberg_table(s3_server, rerun).current_snapshot().snapshot_id
        )
    keys = s3_server.keys(f"{s3}/")
    assert not any(k.endswith("_SUCCESS") for k in keys)
    assert not Path("s3:").exists()  # nothing written to a local folder named after the URI
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in "".join(capsys.readouterr())


def test_library_settings_come_from_the_storage_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's ``[storage]`` endpoint and region reach delta-rs and pyiceberg; credentials never
    do (each library takes them from the SDK chain), and a catalog URI's password is redacted."""
    from batchrank import fs
    from batchrank.scoring.tables.iceberg import catalog_uri_of
    from batchrank.scoring.tables.store import delta_storage_options, iceberg_io_properties
    from batchrank.scoring.tables.target import TableTarget

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(
        fs, "_options", fs.StorageOptions(endpoint="http://minio:9000", region="eu-west-3")
    )
    assert delta_storage_options("s3://b/lake/t") == {
        "AWS_ENDPOINT_URL": "http://minio:9000", "AWS_ALLOW_HTTP": "true", "AWS_REGION": "eu-west-3"
    }  # fmt: skip
    props = iceberg_io_properties("s3://b/lake/t")
    assert props["s3.endpoint"] == "http://minio:9000" and props["s3.region"] == "eu-west-3"
    assert delta_storage_options("/data/lake/t") == {} == iceberg_io_properties("/data/lake/t")
    settings = f"{delta_storage_options('s3://b/t')}{props}"
    assert "testing" not in settings and CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in settings
    target = TableTarget(
        format="iceberg", location="s3://b/lake/t", date=dt.date(2026, 1, 1),
        mode="replace-partition", partition_column="run_date", run_id="r",
        user_type=pa.int64(), item_type=pa.int64(), catalog_uri="postgresql://u:pw@db/lake",
    )  # fmt: skip
    assert catalog_uri_of(target) == "postgresql://u:***@db/lake"  # the password, never the user
