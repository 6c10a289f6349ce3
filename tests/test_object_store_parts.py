"""Folders of parts (``--max-rows-per-file``) on s3:// against a real S3 API (moto's server).

The parts' bytes equal the same run's parts on local disk; a re-run with fewer parts leaves
exactly the new set, all listed in the manifest; a job with ``{date}`` publishes parts,
``_SUCCESS`` and ``latest``; a kill -9 while the commit copies parts in leaves the previous
export readable through its manifest (every object it lists, unchanged), never a ``_SUCCESS``
beside two versions' parts, and the next run removes what the dead one left.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.scoring.parts import PART_MARKER, list_parts
from tests.jobs.test_job_run import kill_9_when, run
from tests.test_object_store_cycle import _job as job_file

ROOT = os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])
PART = re.compile(r"part-\d{5}-[0-9a-f]{12}\.parquet")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHRANK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a path mistaken for local would appear here as ./s3:


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 users x 25 movies: 600 rows of top 10."""
    path = tmp_path_factory.mktemp("pairs") / "p.parquet"
    users = np.repeat(np.arange(1, 61) * 10, 25)
    movies = np.tile(1000 + np.arange(25) * 7, 60)
    pq.write_table(pa.table({"user_id": users, "movie_id": movies}), path)
    return path


def _score(bundle: Path, out: str, pairs: Path, rows: int, *extra: str) -> int:
    argv = ["score", "--model", str(bundle), "--pairs", str(pairs), "--out", out, *extra]
    return run(*argv, "--max-rows-per-file", str(rows), "--quiet")


def _manifest(s3_server: Any, out: str) -> dict[str, Any]:
    return json.loads(s3_server.get(out + ".manifest.json"))  # type: ignore[no-any-return]


def _check_listed(s3_server: Any, folder: str, manifest: dict[str, Any]) -> list[bytes]:
    """Every object the manifest lists is there, with its size and sha256; their bytes."""
    datas = []
    for entry in manifest["files"]:
        data = s3_server.get(f"{folder}/{entry['path']}")
        assert len(data) == entry["bytes"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        datas.append(data)
    return datas


def test_parts_on_s3_equal_the_local_parts_and_a_rerun_leaves_only_its_own(
    s3_server: Any, s3: str, tiny_bundle: Path, pairs: Path, tmp_path: Path
) -> None:
    out = f"{s3}/exports/top.parquet"
    assert _score(tiny_bundle, out, pairs, 100) == 0
    local = tmp_path / "local" / "top.parquet"
    assert _score(tiny_bundle, str(local), pairs, 100) == 0
    local_manifest = json.loads(local.with_name("top.parquet.manifest.json").read_text())

    manifest = _manifest(s3_server, out)
    names = [f["path"] for f in manifest["files"]]
    assert len(names) == 6 and all(PART.fullmatch(n.split("/")[1]) for n in names), names
    assert _check_listed(s3_server, f"{s3}/exports", manifest) == [
        p.read_bytes() for p in list_parts(local)
    ]  # byte-identical to the local parts, in order
    assert [(f["rows"], f["users"]) for f in manifest["files"]] == [
        (f["rows"], f["users"]) for f in local_manifest["files"]
    ]
    assert s3_server.get(f"{out}/{PART_MARKER}") == (local / PART_MARKER).read_bytes()
    assert s3_server.keys(f"{s3}/exports/") == sorted(
        ["exports/top.parquet.manifest.json", f"exports/top.parquet/{PART_MARKER}",
         *(f"exports/{n}" for n in names)]
    )  # fmt: skip  # no staging objects, no copies aside

    # the same run again: the same names (they are the digest of the parts' listing)
    assert _score(tiny_bundle, out, pairs, 100) == 0
    assert [f["path"] for f in _manifest(s3_server, out)["files"]] == names

    # fewer parts (and a rejects file, replaced in place): exactly the new set is left, listed
    assert _score(tiny_bundle, out, pairs, 250, "--rejects", f"{s3}/exports/rejects.csv") == 0
    manifest = _manifest(s3_server, out)
    fewer = [f["path"] for f in manifest["files"]]
    assert len(fewer) == 3 and not set(fewer) & set(names)
    assert s3_server.keys(f"{s3}/exports/") == sorted(
        ["exports/top.parquet.manifest.json", f"exports/top.parquet/{PART_MARKER}",
         "exports/rejects.csv", *(f"exports/{n}" for n in fewer)]
    )  # fmt: skip
    _check_listed(s3_server, f"{s3}/exports", manifest)
    assert manifest["output"]["parts"] == 3
    assert sum(f["rows"] for f in manifest["files"]) == 600  # 60 users x top 10
    assert not Path("s3:").exists()


def _job(folder: Path, bundle: Path, pairs: Path, out: str, rows: int) -> Path:
    """A job of top 5 lists (300 rows), in parts of at most ``rows`` rows."""
    return job_file(folder, str(bundle), str(pairs), out, f"max_rows_per_file = {rows}\n")


def test_a_job_with_date_publishes_parts_success_and_latest(
    s3_server: Any, s3: str, tiny_bundle: Path, pairs: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    job = _job(tmp_path, tiny_bundle, pairs, f"{s3}/jobs/{{date}}/top.parquet", 250)
    assert run("run", str(job), "--date", "2026-12-02") == 0
    assert "for user 10:" in capsys.readouterr().out  # the preview reads the remote parts
    folder = f"{s3}/jobs/2026-12-02"
    manifest = _manifest(s3_server, f"{folder}/top.parquet")
    success = json.loads(s3_server.get(f"{folder}/_SUCCESS"))
    listed = [f["path"] for f in success["files"]]
    assert listed == [*(f["path"] for f in manifest["files"]), "top.parquet.manifest.json"]
    assert s3_server.get(f"{s3}/jobs/latest").decode() == "2026-12-02/top.parquet\n"
    assert s3_server.keys(f"{s3}/jobs/") == sorted(
        ["jobs/2026-12-02/_SUCCESS", f"jobs/2026-12-02/top.parquet/{PART_MARKER}",
         *(f"jobs/2026-12-02/{p}" for p in listed), "jobs/latest"]
    )  # fmt: skip


SLOW_COMMIT = (
    "import sys, time\n"
    "import batchrank.storage.remote as remote\n"
    "real = remote._copy\n"
    "def slow(src, dst):\n"
    "    real(src, dst)\n"
    "    if '/part-' in str(dst) and '/_batchrank-tmp/' not in str(dst):\n"
    "        time.sleep(60)  # a new part is at its final key: the test kills the run here\n"
    "remote._copy = slow\n"
    "from batchrank.cli.main import main\n"
    "main(sys.argv[1:])\n"
)


def test_kill_9_while_parts_are_copied_in_leaves_the_previous_export_readable(
    s3_server: Any, s3: str, tiny_bundle: Path, pairs: Path, tmp_path: Path
) -> None:
    out = f"{s3}/kill/2026-12-03/top.parquet"
    job = _job(tmp_path, tiny_bundle, pairs, f"{s3}/kill/{{date}}/top.parquet", 250)
    assert run("run", str(job), "--date", "2026-12-03", "--quiet") == 0
    before = s3_server.get(out + ".manifest.json")
    old = [f["path"] for f in json.loads(before)["files"]]
    old_data = _check_listed(s3_server, f"{s3}/kill/2026-12-03", json.loads(before))

    _job(tmp_path, tiny_bundle, pairs, f"{s3}/kill/{{date}}/top.parquet", 100)  # 3 parts now
    kill_9_when(
        SLOW_COMMIT, ["run", str(job), "--date", "2026-12-03"],
        lambda: len([k for k in s3_server.keys(out + "/") if PART.search(k)]) > len(old),
        tmp_path / "killed.log", {**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip  # once a part of the new version is in the folder
    # the previous manifest and every part it lists are there, unchanged; _SUCCESS is withdrawn
    # while the folder holds a part of the new version (no consumer globs two versions)
    assert s3_server.get(out + ".manifest.json") == before
    assert _check_listed(s3_server, f"{s3}/kill/2026-12-03", json.loads(before)) == old_data
    keys = s3_server.keys(f"{s3}/kill/2026-12-03/")
    assert "kill/2026-12-03/_SUCCESS" not in keys
    assert any("/_batchrank-tmp/" in k for k in keys)

    assert run("run", str(job), "--date", "2026-12-03", "--quiet") == 0
    manifest = _manifest(s3_server, out)
    new = [f["path"] for f in manifest["files"]]
    assert len(new) == 3 and not set(new) & set(old)
    _check_listed(s3_server, f"{s3}/kill/2026-12-03", manifest)
    assert s3_server.keys(f"{s3}/kill/") == sorted(
        ["kill/2026-12-03/_SUCCESS", "kill/2026-12-03/top.parquet.manifest.json",
         f"kill/2026-12-03/top.parquet/{PART_MARKER}",
         *(f"kill/2026-12-03/{p}" for p in new), "kill/latest"]
    )  # fmt: skip  # the dead run's staging objects and stray part are gone, the old parts too


def test_a_failed_success_rolls_back_to_the_previous_export_whole(
    s3_server: Any, s3: str, tiny_bundle: Path, pairs: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The last step fails (the server refuses ``_SUCCESS``) after the previous parts were
    removed: every object comes back, as it was, and nothing of the new version is left."""
    import batchrank.storage.remote as remote

    job = _job(tmp_path, tiny_bundle, pairs, f"{s3}/fail/{{date}}/top.parquet", 250)
    assert run("run", str(job), "--date", "2026-12-04", "--quiet") == 0
    before = {k: s3_server.get(f"{s3}/{k}") for k in s3_server.keys(f"{s3}/fail/")}
    real = remote._copy

    def refuse_success(src: Any, dst: Any) -> None:
        if str(dst).endswith("/_SUCCESS") and "/old-" not in str(src):
            raise OSError("When completing multiple copies: AWS Error ACCESS_DENIED")
        real(src, dst)

    monkeypatch.setattr(remote, "_copy", refuse_success)
    _job(tmp_path, tiny_bundle, pairs, f"{s3}/fail/{{date}}/top.parquet", 100)
    capsys.readouterr()
    assert run("run", str(job), "--date", "2026-12-04", "--quiet") == 5
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"batchrank: error: {s3}/fail/2026-12-04/_SUCCESS: cannot commit"), err
    assert len(err.splitlines()) == 1
    keys = s3_server.keys(f"{s3}/fail/")
    export = [k for k in keys if "/.batchrank-work/" not in k]  # its resume state is kept
    assert {k: s3_server.get(f"{s3}/{k}") for k in export} == before


def test_what_a_dead_first_run_left_is_removed_by_the_next(
    s3_server: Any, s3: str, tiny_bundle: Path, pairs: Path, tmp_path: Path
) -> None:
    """A first run killed in its commit leaves the marker (copied first), a part no manifest
    lists and its staging objects; the next run takes the folder as its own and cleans up."""
    out = f"{s3}/dead/top.parquet"
    (tmp_path / "junk").write_bytes(b"half a run")
    for key in (
        f"{out}/{PART_MARKER}",
        f"{out}/part-00000-0123456789ab.parquet",
        f"{s3}/dead/_batchrank-tmp/top.parquet/0123456789ab/part-00001.parquet",
    ):
        s3_server.upload(tmp_path / "junk", key)  # fmt: skip
    assert _score(tiny_bundle, out, pairs, 250) == 0
    manifest = _manifest(s3_server, out)
    _check_listed(s3_server, f"{s3}/dead", manifest)
    assert s3_server.keys(f"{s3}/dead/") == sorted(
        ["dead/top.parquet.manifest.json", f"dead/top.parquet/{PART_MARKER}",
         *(f"dead/{f['path']}" for f in manifest["files"])]
    )  # fmt: skip
