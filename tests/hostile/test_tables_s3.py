"""Hostile lake tables on an object store (moto's S3 server): a run killed at its table commit
leaves no commit, and a missing bucket or an unreachable server is one line naming the table,
exit 5, with nothing written."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.hostile.test_tables import PAIRS, ROOT, error_line
from tests.jobs.test_job_run import run
from tests.s3server import CREDENTIALS, use_env
from tests.scoring.test_lake_tables_s3 import delta_commits, iceberg_table, manifest

pytest.importorskip("deltalake")
pytest.importorskip("pyiceberg")

pytestmark = pytest.mark.lake


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHRANK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def score(model: Path, out: str, fmt: str, date: str) -> list[str]:
    return ["score", "--model", str(model), "--pairs", str(PAIRS), "--out", out,
            "--format", fmt, "--date", date, "--quiet"]  # fmt: skip


KILL_AT_COMMIT = textwrap.dedent(
    """
    import os, signal, sys

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[1] == "iceberg":
        # at the commit: the new metadata file is written, the catalog's pointer not yet moved
        from pyiceberg.catalog import MetastoreCatalog as Catalog

        write = Catalog._write_metadata

        def write_then_die(*args, **kwargs):
            write(*args, **kwargs)
            die()

        Catalog._write_metadata = staticmethod(write_then_die)
    else:
        # just before the log entry's conditional put: data files uploaded, nothing committed
        from batchrank.scoring.tables.staged import TableStaged

        TableStaged.commit = die
    from batchrank.cli.main import main
    main(sys.argv[2:])
    """
)


def commits(fmt: str, server: Any, uri: str, record: dict[str, Any]) -> list[str]:
    """Run ids of the table's commits, oldest first (Iceberg: through the catalog ``record``,
    a manifest, names)."""
    if fmt == "delta":
        return [c.get("batchrank.run_id", "") for c in delta_commits(server, uri)]
    snaps = iceberg_table(server, record).snapshots()
    return [s.summary.additional_properties.get("batchrank.run_id", "") for s in snaps]


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_kill_9_at_the_commit_on_s3_leaves_no_commit(
    fmt: str, s3: str, s3_server: Any, sample_bundle: Path
) -> None:
    uri = f"{s3}/lake/recs"
    assert run(*score(sample_bundle, uri, fmt, "2026-05-01")) == 0
    first = manifest(s3_server, uri)
    before, keys = commits(fmt, s3_server, uri, first), s3_server.keys(f"{uri}/")
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_COMMIT, fmt, *score(sample_bundle, uri, fmt, "2026-05-02")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert commits(fmt, s3_server, uri, first) == before  # nothing of the killed run
    left = sorted(set(s3_server.keys(f"{uri}/")) - set(keys))
    assert any("run_date=2026-05-02" in k for k in left)  # its data files, referenced by none
    if fmt == "iceberg":
        assert any(k.endswith(".metadata.json") for k in left)  # written, never made current
    args = ["table", "maintain", "--out", uri, "--format", fmt, "--retain-days", "0"]
    assert run(*args) == 0
    assert not set(s3_server.keys(f"{uri}/")) & set(left)  # maintenance removes them
    assert commits(fmt, s3_server, uri, first)[: len(before)] == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


@pytest.mark.parametrize(
    ("fmt", "case"), [("delta", "missing bucket"), ("iceberg", "unreachable server")]
)
def test_missing_bucket_or_unreachable_server_is_one_line(
    fmt: str,
    case: str,
    s3: str,
    s3_server: Any,
    sample_bundle: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Checked before any work, whatever the format: one line naming the table's URI, exit 5."""
    uri, env = f"{s3}/lake/recs", {}
    if case == "missing bucket":
        uri = f"s3://no-such-bucket-{fmt}/lake/recs"
    else:
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}"}
    with contextlib.contextmanager(use_env)(env):
        assert run(*score(sample_bundle, uri, fmt, "2026-05-01")) == 5
    line = error_line(capsys)
    reason = "bucket does not exist" if case == "missing bucket" else "cannot reach the storage"
    assert line.startswith(f"batchrank: error: {uri}: ") and reason in line, line
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in line
    assert s3_server.keys(f"{s3}/") == []  # nothing written
    assert not Path("s3:").exists()


def test_a_concurrent_delta_writer_on_s3_wins_the_conditional_put(
    s3: str,
    s3_server: Any,
    sample_bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another writer commits the next version between this run's stage and its commit: S3's
    conditional put refuses this run's log entry, so it fails (exit 5) and commits nothing."""
    from deltalake import write_deltalake

    from batchrank.scoring.tables.staged import TableStaged
    from tests.scoring.test_lake_tables_s3 import delta_options

    uri = f"{s3}/lake/recs"
    assert run(*score(sample_bundle, uri, "delta", "2026-05-01")) == 0
    original = TableStaged.commit

    def other_writer_first(self: TableStaged) -> Any:
        rows = pa.table({"user_id": [1], "rank": pa.array([1], pa.int32())})
        write_deltalake(uri, rows, mode="append", storage_options=delta_options(s3_server),
                        schema_mode="merge")  # fmt: skip
        return original(self)

    monkeypatch.setattr(TableStaged, "commit", other_writer_first)
    assert run(*score(sample_bundle, uri, "delta", "2026-05-02")) == 5
    line = error_line(capsys)
    assert line.startswith(f"batchrank: error: delta table {uri}: another writer committed")
    runs = [c.get("batchrank.run_id") for c in delta_commits(s3_server, uri)]
    assert len(runs) == 2 and runs[0] and runs[1] is None  # theirs, not ours
    assert not any("run_date=2026-05-02" in k for k in s3_server.keys(f"{uri}/"))  # ours removed
