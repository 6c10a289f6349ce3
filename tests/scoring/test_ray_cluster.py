"""The Ray engine on a multi-node cluster without a shared disk: everything on the S3 server.

The cluster runs in a subprocess (``tests/scoring/ray_cluster.py``): a head and a worker
node started without the driver's storage variables, each with its own cache folder. The
settings the workers need travel in their arguments (:mod:`batchrank.scoring.ray.storage`);
the fast tests below check those pieces alone.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from batchrank import fs
from batchrank.scoring.api import score
from batchrank.scoring.ray import session, storage
from tests.s3server import CREDENTIALS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"


@pytest.mark.ray
def test_a_two_node_cluster_scores_s3_into_s3_like_the_local_engine(
    s3_server: Any, s3: str, sample_bundle: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    s3_server.upload(sample_bundle, f"{s3}/models/m")
    src = pq.read_table(SAMPLE / "candidates.parquet")
    for i, rows in enumerate(np.array_split(np.arange(src.num_rows), 4)):
        pq.write_table(src.take(rows), tmp_path / f"part-{i}.parquet")
        s3_server.upload(tmp_path / f"part-{i}.parquet", f"{s3}/cands/day/part-{i}.parquet")
    pairs = [f"{s3}/cands/day/*.parquet"]
    local = score(
        model=f"{s3}/models/m", pairs=pairs, out=tmp_path / "local.parquet", progress="none"
    )

    request = tmp_path / "request.json"
    out = f"{s3}/exports/day/top10.parquet"
    request.write_text(
        json.dumps(
            {
                "model": f"{s3}/models/m",
                "pairs": pairs,
                "out": out,
                "work": str(tmp_path / "work"),
                "chunk_rows": 3000,
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.scoring.ray_cluster", str(request)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("cluster timings:", result["seconds"])

    assert s3_server.get(out) == (tmp_path / "local.parquet").read_bytes()
    assert result["manifest"]["counts"] == local["counts"]
    # both nodes scored batches, each with the bundle it fetched itself
    assert sorted(result["scored_on"]) == sorted(result["nodes"])
    assert result["caches_with_bundle"] == ["driver", "head", "node"]
    assert result["ray_files_with_secret"] == []
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr


def test_a_job_storage_section_and_keys_reach_a_worker_without_the_environment(
    s3_server: Any, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_server.client().put_object(Bucket=s3[5:], Key="k.txt", Body=b"hello")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    fs.configure(fs.StorageOptions(endpoint=s3_server.endpoint, region="us-east-1"))
    try:
        carried = pickle.dumps(storage.worker_storage())
        read_fs = pickle.dumps(storage.read_filesystem(fs.ObjectPath(f"{s3}/k.txt")))
    finally:
        fs.configure(fs.StorageOptions())
    # a worker process: no [storage] options, no variables
    for name in storage.CARRIED:
        monkeypatch.delenv(name, raising=False)
    fs.clear_cache()
    assert "testing-secret-value" not in repr(pickle.loads(carried))
    pickle.loads(carried).apply()
    try:
        assert fs.ObjectPath(f"{s3}/k.txt").read_bytes() == b"hello"
        assert os.environ["AWS_SECRET_ACCESS_KEY"] == CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    finally:
        fs.configure(fs.StorageOptions())
        fs.clear_cache()
    # Ray's readers get the driver's keys inside the file system they unpickle
    options = pickle.loads(read_fs).__reduce__()[1][0]
    assert options["access_key"] == CREDENTIALS["AWS_ACCESS_KEY_ID"]
    assert options["endpoint_override"] == s3_server.endpoint.removeprefix("http://")


def test_without_static_keys_readers_use_the_nodes_own_chain(
    s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    fs.clear_cache()
    try:
        path = fs.ObjectPath(f"{s3}/k.txt")
        assert storage.read_filesystem(path) is fs.filesystem_of(path)[0]
        assert "AWS_ACCESS_KEY_ID" not in storage.worker_storage().env
    finally:
        fs.clear_cache()


def test_a_fixed_pool_leaves_a_whole_cpu_on_some_node_for_reading() -> None:
    # 2 nodes x 2 CPUs, 4 actors: 0.75 each (one CPU left in all) could leave 0.5 on each node,
    # and a read task needs 1. At 0.5 each, 2 CPUs stay free: one node keeps a whole one.
    assert session.actor_cpus(4, 4, nodes=2) == 0.5
    assert session.actor_cpus(4, 4) == 0.75
    assert session.actor_cpus(3, 4, nodes=2) is None  # whole-CPU actors leave a whole CPU
