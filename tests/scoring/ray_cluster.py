"""A two-node Ray cluster on this machine, scoring S3 inputs into S3 with ``--engine ray``.

Run by ``test_ray_cluster.py`` in its own process (a second Ray cluster cannot join the
session's local Ray instance in one process)::

    python -m tests.scoring.ray_cluster REQUEST.json

``REQUEST.json`` holds ``model``, ``pairs`` and ``out`` (URIs), ``work`` (a local folder) and
``chunk_rows``. The cluster (:class:`ray.cluster_utils.Cluster`) is a head and one worker node,
two logical CPUs each. Every node starts without the driver's storage variables
(``AWS_ENDPOINT_URL``, region, keys: they are removed from the environment the nodes inherit)
and with a cache folder of its own (``BATCHRANK_CACHE_DIR``), so no node can read what the
driver or another node fetched: a cluster without a shared file system. The driver then gets
its variables back and runs ``batchrank.score(engine="ray", concurrency=2)`` against the
cluster's address (Ray Data spreads the two actors over the nodes). Prints one JSON line: the
manifest, the node ids the engine says scored batches, the nodes' ids, which cache folders hold
a fetched bundle, the Ray log files that contain the dummy secret access key, and timings.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class _Nodes(logging.Handler):
    """Keeps the node ids of the engine's ``ray_done`` log record."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "ray_done":
            self.nodes = list(getattr(record, "nodes", []))


def _files_containing(folder: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    )


def run(request: dict[str, Any]) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from batchrank.scoring.api import score
    from batchrank.scoring.ray.storage import CARRIED

    t0 = time.perf_counter()
    work = Path(request["work"])
    driver_env = {k: os.environ.pop(k) for k in CARRIED if k in os.environ}
    # a short folder of its own: Ray's socket paths must fit in 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="brc-", dir="/tmp"))
    common = {"include_dashboard": False, "temp_dir": str(temp), "object_store_memory": 80 << 20}
    caches = {name: work / f"cache-{name}" for name in ("head", "node", "driver")}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            "num_cpus": 2,
            "env_vars": {"BATCHRANK_CACHE_DIR": str(caches["head"])},
        },
    )
    try:
        nodes = [
            cluster.head_node,
            cluster.add_node(
                **common, num_cpus=2, env_vars={"BATCHRANK_CACHE_DIR": str(caches["node"])}
            ),
        ]
        cluster.wait_for_nodes()
        t1 = time.perf_counter()
        os.environ.update(driver_env)
        os.environ["BATCHRANK_CACHE_DIR"] = str(caches["driver"])
        handler = _Nodes()
        logging.getLogger("batchrank.score").addHandler(handler)
        logging.getLogger("batchrank.score").setLevel(logging.INFO)
        manifest = score(
            model=request["model"],
            pairs=request["pairs"],
            out=request["out"],
            engine="ray",
            ray_address=cluster.address,
            concurrency=2,
            chunk_rows=request["chunk_rows"],
            progress="none",
        )
        secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
        return {
            "manifest": manifest,
            "scored_on": handler.nodes,
            "nodes": [n.node_id for n in nodes],
            "caches_with_bundle": sorted(
                name for name, c in caches.items() if any(c.rglob("weights.npz"))
            ),
            "ray_files_with_secret": _files_containing(temp, secret),
            "seconds": {"cluster_start": t1 - t0, "score": time.perf_counter() - t1},
        }
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    result = run(json.loads(Path(sys.argv[1]).read_text()))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
