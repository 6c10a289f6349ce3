"""``batchrank publish bench``: the loader against a plain redis-py pipeline loop, side by side.

Both write the same keys and JSON values of synthetic ranked lists (``--items`` per user, titles
of realistic lengths) to one local ``redis-server`` started for the run (persistence off). The
loader is timed from the ranked Arrow tables (JSON and protocol encoding included) to the
verified acknowledgement; the baseline gets its values already encoded, and is timed for
``pipeline.set`` per key with an ``execute()`` every 10,000 keys. The database is flushed
between runs; each side's best of ``repeat`` runs is reported. With ``cluster`` primaries, the
loader also loads a local Redis Cluster of that many nodes (``redis-cli --cluster create``) in
the same alternation, so the single server and the cluster are measured side by side.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from batchrank.sinks.redis.generations import RedisSink
from batchrank.sinks.redis.protocol import Connection
from batchrank.sinks.redis.server import LocalCluster, LocalRedis
from batchrank.sinks.redis.target import target_of
from batchrank.sinks.redis.values import key_values

__all__ = ["ranked_tables", "run_bench"]

_WORDS = [
    "Star",
    "Wars",
    "Toy",
    "Story",
    "Fargo",
    "Heat",
    "The",
    "Return",
    "of",
    "Night",
    "City",
    "Lost",
    "Love",
    "Jedi",
    "Dead",
    "Man",
]
CHUNK_USERS = 65_536
"""Users per ranked table, about what the scorer's top-k hands the writers."""


def ranked_tables(users: int, items: int, seed: int = 0) -> list[pa.Table]:
    """Synthetic ranked rows (``user_id, rank, movie_id, title, stars, score``), by chunks."""
    rng = np.random.default_rng(seed)
    movies = 1682
    titles = [
        " ".join(rng.choice(_WORDS, int(rng.integers(1, 5))))
        + f" ({int(rng.integers(1930, 1999))})"
        for _ in range(movies)
    ]
    title_arr = pa.array(titles)
    out = []
    for lo in range(0, users, CHUNK_USERS):
        n = min(CHUNK_USERS, users - lo)
        movie = rng.integers(0, movies, n * items)
        score = np.sort(rng.random((n, items)).astype(np.float32), axis=1)[:, ::-1].ravel()
        out.append(
            pa.table(
                {
                    "user_id": pa.array(np.repeat(np.arange(lo, lo + n) + 1, items), pa.int64()),
                    "rank": pa.array(np.tile(np.arange(1, items + 1), n), pa.int32()),
                    "movie_id": pa.array(movie + 1, pa.int64()),
                    "title": title_arr.take(pa.array(movie)),
                    "stars": pa.array(1 + 4 * score, pa.float32()),
                    "score": pa.array(score, pa.float32()),
                }
            )
        )
    return out


def _ours(url: str, tables: list[pa.Table], run: int, users: int) -> float:
    target = target_of(url, {"prefix": "bench:"})
    t0 = time.perf_counter()
    sink = RedisSink(target, prefix=target.prefix, generation=f"g{run}")
    for t in tables:
        sink.write(t)
    staged, report = sink.finish()
    elapsed = time.perf_counter() - t0
    staged.commit().finalize()
    if report["keys"] != users:
        raise RuntimeError(f"loaded {report['keys']} keys of {users}")
    return elapsed


def _redis_py(port: int, values: list[tuple[list[str], list[str]]]) -> float:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    t0 = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    n = 0
    for keys, vals in values:
        for k, v in zip(keys, vals, strict=True):
            pipe.set(k, v)
            n += 1
            if n % 10_000 == 0:
                pipe.execute()
    pipe.execute()
    elapsed = time.perf_counter() - t0
    client.close()
    return elapsed


def _flush(*urls: str) -> None:
    for url in urls:
        with Connection(target_of(url)) as conn:
            conn.call("FLUSHALL")


def run_bench(*, users: int, items: int, repeat: int, cluster: int = 0) -> dict[str, Any]:
    """Run both loaders ``repeat`` times each, alternating (and the loader on a local cluster
    of ``cluster`` primaries, when not 0); return the best figures."""
    tables = ranked_tables(users, items)
    with tempfile.TemporaryDirectory(prefix="batchrank-redis-bench-") as tmp:
        server = LocalRedis(Path(tmp) / "single")
        nodes = LocalCluster(Path(tmp) / "cluster", cluster) if cluster else None
        try:
            prefix = "bench:g0:"
            encoded = [key_values(t, prefix, "json") for t in tables]
            values = [(kv["key"].to_list(), kv["value"].to_list()) for kv in encoded]
            value_bytes = sum(int(kv["value"].str.len_bytes().sum()) for kv in encoded)
            ours: list[float] = []
            theirs: list[float] = []
            on_cluster: list[float] = []
            for run in range(repeat):
                _flush(server.url)
                ours.append(_ours(server.url, tables, run, users))
                _flush(server.url)
                theirs.append(_redis_py(server.port, values))
                if nodes is not None:
                    _flush(*(n.url for n in nodes.nodes))
                    on_cluster.append(_ours(nodes.url, tables, run, users))
        finally:
            server.stop()
            if nodes is not None:
                nodes.stop()
    best_ours, best_theirs = min(ours), min(theirs)
    out = {
        "users": users,
        "items": items,
        "repeat": repeat,
        "value_mb": value_bytes / 1e6,
        "batchrank_s": round(best_ours, 3),
        "redis_py_s": round(best_theirs, 3),
        "batchrank_users_per_s": users / best_ours,
        "redis_py_users_per_s": users / best_theirs,
        "ratio": best_theirs / best_ours,
    }
    if on_cluster:
        out |= {
            "cluster_primaries": cluster,
            "cluster_s": round(min(on_cluster), 3),
            "cluster_users_per_s": users / min(on_cluster),
        }
    return out
