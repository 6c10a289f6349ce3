"""Publishing to a real three-primary Redis Cluster: slots, routing, redirections, rollback,
and a node killed in the middle of a load."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.sinks.redis import RedisSink, target_of
from batchrank.sinks.redis.bench import ranked_tables
from batchrank.sinks.redis.slots import hash_slots, key_slot, prefixed_slots
from tests.hostile.test_redis import error_line, published
from tests.jobs.test_job_run import _clean_env, run  # noqa: F401 (autouse: no BATCHRANK_*)
from tests.redis_server import CutProxy, RedisCluster, free_port
from tests.sinks.test_redis_publish import manifest_of, publish_runs, score


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    c = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


def _keyslots(cluster: RedisCluster, keys: list[str]) -> list[int]:
    pipe = cluster.nodes[0].client().pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("CLUSTER", "KEYSLOT", key)
    return [int(slot) for slot in pipe.execute()]


def test_slots_are_the_clusters_own(cluster: RedisCluster) -> None:
    keys = ["", "a", "foo", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "{}", "{a",
            "a}{b}", "x{é}y", "batchrank:sample:3f2a9c01b7de:196"]  # fmt: skip
    keys += [f"p{{{i % 7}}}:{i}" if i % 3 else f"batchrank:j:{i}" for i in range(300)]
    want = _keyslots(cluster, keys)
    assert hash_slots(pa.array(keys)).tolist() == want
    assert [key_slot(k) for k in keys[:11]] == want[:11]
    users = [str(u) for u in range(500)] + ["{7}", "a}b"]
    for prefix in ("batchrank:j:g1:", "t{x}:", "t{:", "t}{"):
        expected = _keyslots(cluster, [prefix + u for u in users])
        assert prefixed_slots(prefix, pa.array(users)).tolist() == expected, prefix


def _check_lists(cluster: RedisCluster, out: Path, prefix: str) -> dict[int, int]:
    """Every user's list, read through ``current`` on the node serving it, equals the Parquet
    output; return the number of the generation's keys per node."""
    generation = manifest_of(out)["run_id"]
    owners = cluster.slot_owners()
    clients = [node.client() for node in cluster.nodes]
    current = clients[owners[cluster.slot(prefix + "current")]].get(prefix + "current")
    assert current == generation.encode()
    rows = pq.read_table(out).to_pylist()
    users = sorted({row["user_id"] for row in rows})
    per_node = dict.fromkeys(range(3), 0)
    keys = [f"{prefix}{generation}:{user}" for user in users]
    for user, key, slot in zip(users, keys, _keyslots(cluster, keys), strict=True):
        node = owners[slot]
        per_node[node] += 1
        got = json.loads(clients[node].get(key))
        want = [row for row in rows if row["user_id"] == user]
        assert [g["movie_id"] for g in got] == [w["movie_id"] for w in want]
        assert [g["title"] for g in got] == [w["title"] for w in want]
        assert np.array_equal(np.float32([g["score"] for g in got]),
                              np.float32([w["score"] for w in want]))  # fmt: skip
    for n, client in enumerate(clients):  # and no node holds a key it does not serve
        assert sum(1 for _ in client.scan_iter(f"{prefix}{generation}:*", 1000)) == per_node[n]
    return per_node


def test_publish_reads_back_from_every_node_and_rolls_back(
    tmp_path: Path, tiny_bundle: Path, cluster: RedisCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    gens = publish_runs(tiny_bundle, tmp_path, cluster.url + "?prefix=cl:&keep=2")
    out = tmp_path / "top2.parquet"
    per_node = _check_lists(cluster, out, "cl:")
    assert all(per_node.values()), per_node  # the keys are spread over the three primaries
    redis = manifest_of(out)["publish"]["redis"]
    assert sorted(redis["nodes"].values()) == sorted(per_node.values())
    assert sum(redis["nodes"].values()) == redis["keys"]
    left = {
        k.decode().split(":")[1] for node in cluster.nodes for k in node.client().keys("cl:*:*")
    }
    assert left == set(gens[1:])  # the oldest generation was deleted from every node
    capsys.readouterr()
    assert run("publish", "rollback", cluster.nodes[2].url, "--prefix", "cl:") == 0
    current = cluster.owner("cl:current").client()
    assert current.get("cl:current").decode() == gens[1]
    assert f"{gens[2]} -> {gens[1]}" in capsys.readouterr().err
    assert run("publish", "status", cluster.nodes[1].url, "--prefix", "cl:") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["current"] == gens[1] and status["history"] == [gens[1]]
    assert len(status["cluster_primaries"]) == 3


def _move_slots(cluster: RedisCluster, slots: list[int], dest: int, *, migrate: bool) -> None:
    """Give empty slots to node ``dest`` now (``migrate=False``), or only mark them migrating
    there (their node then answers ASK for a key it lacks)."""
    ids = [cluster.node_id(n) for n in cluster.nodes]
    owners = cluster.slot_owners()
    clients = [n.client() for n in cluster.nodes]
    for slot in slots:
        source = owners[slot]
        if migrate:
            clients[dest].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
            clients[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dest])
        else:
            for client in clients:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dest])


def test_moved_and_ask_redirections_are_followed(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    target = target_of(cluster.url, {"prefix": "mv:"})
    sink = RedisSink(target, prefix="mv:", generation="g1")  # the slot map is read here
    slots = hash_slots(pa.array([f"mv:g1:{u}" for u in range(1, 3001)]))
    owners = cluster.slot_owners()
    client = cluster.nodes[0].client()
    empty = [  # slots of node 0 that no earlier test wrote to
        s for s in sorted(set(slots.tolist()))
        if owners[s] == 0 and not client.execute_command("CLUSTER", "COUNTKEYSINSLOT", s)
    ]  # fmt: skip
    _move_slots(cluster, empty[:40], 1, migrate=False)  # node 0 answers MOVED
    _move_slots(cluster, empty[40:80], 2, migrate=True)  # node 0 answers ASK
    try:
        for t in ranked_tables(3000, 2):
            sink.write(t)
        staged, report = sink.finish()
        staged.commit().finalize()
    finally:
        _move_slots(cluster, empty[40:80], 2, migrate=False)  # the migration's end
    assert report["keys"] == 3000 and sum(report["nodes"].values()) == 3000
    owners = cluster.slot_owners()
    clients = [n.client() for n in cluster.nodes]
    for user in range(1, 3001):
        key = f"mv:g1:{user}"
        assert clients[owners[int(slots[user - 1])]].exists(key), key
    moved = sum(1 for s in slots.tolist() if s in set(empty[:80]))
    assert f"{moved} keys redirected" in caplog.text and moved > 50


def test_a_node_killed_mid_load_fails_with_one_line_and_leaves_current(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    announced = free_port()  # node 2 tells clients this port; a proxy listens there
    c = RedisCluster(tmp_path / "cluster", announce={2: announced})
    try:
        proxy = CutProxy(c.nodes[2].port, 1 << 40, c.nodes[2].kill, listen=announced)
        prefixes = (f"k{i}:" for i in range(100))
        prefix = next(p for p in prefixes if c.owner(p + "current") is c.nodes[0])
        url = c.url + f"?prefix={prefix}&retries=1"
        assert score(tiny_bundle, tmp_path / "a" / "top.parquet", url) == 0
        client = c.nodes[0].client()
        previous = client.get(prefix + "current")
        proxy.cut_after = proxy.forwarded + 4000  # node 2 dies a few kB into the next load
        capsys.readouterr()
        out = tmp_path / "b" / "top.parquet"
        assert score(tiny_bundle, out, url) == 5
        line = error_line(capsys)
        assert f"redis://127.0.0.1:{announced}/0" in line  # names the node that went away
        assert c.nodes[2].proc.poll() is not None
        assert client.get(prefix + "current") == previous  # readers still get the old lists
        assert not out.exists() and published(out) == []
    finally:
        c.stop()


def test_bench_loads_a_local_cluster_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["publish", "bench", "--users", "1000", "--items", "2", "--repeat", "1", "--json"]
    assert run(*args, "--cluster", "3") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cluster_primaries"] == 3 and result["cluster_users_per_s"] > 0
    assert result["batchrank_users_per_s"] > 0 and result["redis_py_users_per_s"] > 0
    assert run(*args, "--cluster", "2") == 2
    assert "at least 3 primaries" in error_line(capsys)
