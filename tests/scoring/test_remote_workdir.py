"""A work folder on S3 (``--work-dir s3://…``): a run killed -9 on one machine is resumed on
another (its own, empty local cache) from the finished fragments on the store; a fragment
whose objects are incomplete is scored again; after the commit the work prefix is empty.
Against the real S3 API of the ``s3`` fixture (moto's server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.fs import ObjectPath
from batchrank.scoring.workdir import FragmentStore
from tests.jobs.test_job_run import kill_9_when, run

ROOT = os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])
SLOW_AFTER_TWO = (
    "import sys, time\n"
    "import batchrank.scoring.workdir as w\n"
    "real = w.FragmentStore.save\n"
    "done = []\n"
    "def save(self, *a, **k):\n"
    "    path = real(self, *a, **k)\n"
    "    done.append(path)\n"
    "    if len(done) == 2:\n"
    "        time.sleep(60)  # two fragments on the store, the third not: killed here\n"
    "    return path\n"
    "w.FragmentStore.save = save\n"
    "from batchrank.cli.main import main\n"
    "main(sys.argv[1:])\n"
)


@pytest.fixture
def pairs(s3_server: Any, s3: str, tiny_ratings: Any, tmp_path: Path) -> str:
    """Three pairs files (three fragments) on S3, each with a row the scorer rejects."""
    frame = tiny_ratings.frame
    folder = tmp_path / "cands"
    folder.mkdir()
    for part in range(3):
        rows = frame.slice(part * 200, 200)
        table = pa.table(
            {
                "user_id": [*rows["user_id"].to_list(), 424242],
                "movie_id": [*rows["movie_id"].to_list(), rows["movie_id"][0]],
            }
        )
        pq.write_table(table, folder / f"part-{part}.parquet")
    s3_server.upload(folder, f"{s3}/cands")
    return f"{s3}/cands/"


def _metas(keys: list[str]) -> list[str]:
    """The finished fragments' meta objects (written last; staging keys are not counted)."""
    return [
        k for k in keys if k.endswith(".json") and "/fragment-" in k and "_batchrank-tmp" not in k
    ]


def _score(model: Path, pairs: str, out: str, *extra: str) -> list[str]:
    return ["score", "--model", str(model), "--pairs", pairs, "--out", out, "--quiet", *extra]


def test_killed_run_resumes_on_another_machine_from_the_s3_work_dir(
    s3_server: Any, s3: str, pairs: str, tiny_bundle: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    work = f"{s3}/work/run1"
    out = f"{s3}/exports/top5.parquet"
    args = _score(tiny_bundle, pairs, out, "--work-dir", work, "--rejects", f"{s3}/exports/rej.csv")
    machine_a = {**os.environ, "PYTHONPATH": ROOT, "BATCHRANK_CACHE_DIR": str(tmp_path / "a")}
    kill_9_when(
        SLOW_AFTER_TWO, args, lambda: len(_metas(s3_server.keys(f"{work}/"))) >= 2,
        tmp_path / "killed.log", machine_a,
    )  # fmt: skip
    left = s3_server.keys(f"{work}/")
    metas = _metas(left)
    assert len(metas) == 2, left
    assert s3_server.keys(f"{s3}/exports/") == []  # nothing published

    # a finished fragment whose data object is truncated: scored again, never trusted
    client = s3_server.client()
    bucket = s3.removeprefix("s3://")
    data_key = metas[0].removesuffix(".json") + ".parquet"
    body = client.get_object(Bucket=bucket, Key=data_key)["Body"].read()
    client.put_object(Bucket=bucket, Key=data_key, Body=body[: len(body) // 2])

    monkeypatch.setenv("BATCHRANK_CACHE_DIR", str(tmp_path / "b"))  # machine B: its own cache
    monkeypatch.setenv("HOME", str(tmp_path / "home-b"))
    assert run(*args) == 0
    manifest = json.loads(s3_server.get(out + ".manifest.json"))
    assert manifest["resume"]["fragments"] == 3
    assert manifest["resume"]["fragments_resumed"] == 1  # the intact one; the truncated redone
    assert s3_server.keys(f"{work}/") == []  # committed: the work prefix is emptied
    assert not (tmp_path / "b" / "work").exists()

    assert run(*_score(tiny_bundle, pairs, str(tmp_path / "top5.parquet"),
                       "--rejects", str(tmp_path / "rej.csv"))) == 0  # fmt: skip
    assert s3_server.get(out) == (tmp_path / "top5.parquet").read_bytes()
    assert s3_server.get(f"{s3}/exports/rej.csv") == (tmp_path / "rej.csv").read_bytes()
    assert (
        manifest["counts"]
        == json.loads((tmp_path / "top5.parquet.manifest.json").read_text())["counts"]
    )


def test_a_fragment_without_its_meta_object_or_with_a_bad_one_is_not_finished(
    s3_server: Any, s3: str
) -> None:
    def put(path: Path, body: str) -> None:
        s3_server.client().put_object(Bucket=s3[5:], Key=path.key, Body=body.encode())  # type: ignore[attr-defined]

    store = FragmentStore(ObjectPath(f"{s3}/work"))
    partial = pa.table({"user_id": [1, 2], "score": [0.5, 0.25]})
    rejects = store.rejects_part("k1")
    rejects.write(None)
    store.save("k1", partial, rejects, {"read": 2}, 7)
    done = store.load("k1")
    assert done is not None and done.partial.equals(partial) and done.work == 7
    assert done.counts == {"read": 2}

    data, _, meta = store.paths("k1")
    put(meta, json.dumps({"counts": {"read": 2}, "work": 7}))  # no sizes recorded
    assert store.load("k1") is None
    put(meta, "{not json")
    assert store.load("k1") is None
    store.rejects_part("k1")  # redoing it: its meta object goes first
    assert not meta.exists() and data.exists()
    assert store.load("k1") is None
    store.clear()
    assert list(ObjectPath(f"{s3}/work").iter_files()) == []
