"""Publishing to a real redis-server: read every list back, generations, rollback, job runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import batchrank
from tests.jobs.test_job_run import _clean_env, run  # noqa: F401 (autouse: no BATCHRANK_*)
from tests.redis_server import RedisServer


def manifest_of(out: Path) -> dict[str, Any]:
    return json.loads(out.with_name(out.name + ".manifest.json").read_text())


def score(bundle: Path, out: Path, url: str, *extra: str) -> int:
    return run(
        "score", "--model", str(bundle), "--pairs", "all", "--out", str(out),
        "--publish", url, "--quiet", *extra,
    )  # fmt: skip


def publish_runs(bundle: Path, folder: Path, url: str, runs: int = 3) -> list[str]:
    """Score and publish ``runs`` times (``folder/top{n}.parquet``); the generations."""
    generations = []
    for n in range(runs):
        out = folder / f"top{n}.parquet"
        assert score(bundle, out, url) == 0
        generations.append(manifest_of(out)["run_id"])
    return generations


def test_every_users_list_reads_back_as_in_the_parquet_output(
    tmp_path: Path, tiny_bundle: Path, redis_server: RedisServer
) -> None:
    out = tmp_path / "top.parquet"
    assert score(tiny_bundle, out, redis_server.url + "?prefix=t:") == 0
    manifest = manifest_of(out)
    redis = manifest["publish"]["redis"]
    generation = manifest["run_id"]
    assert redis["generation"] == generation
    assert redis["url"] == redis_server.url and redis["prefix"] == "t:"
    r = redis_server.client()
    assert r.get("t:current").decode() == generation  # a reader resolves current
    rows = pq.read_table(out).to_pylist()
    users = sorted({row["user_id"] for row in rows})
    assert redis["keys"] == len(users) == manifest["counts"]["users_written"]
    total = 0
    for user in users:
        raw = r.get(f"t:{generation}:{user}")
        total += len(raw)
        got = json.loads(raw)
        want = [row for row in rows if row["user_id"] == user]
        assert [g["rank"] for g in got] == [w["rank"] for w in want]
        assert [g["movie_id"] for g in got] == [w["movie_id"] for w in want]
        assert [g["title"] for g in got] == [w["title"] for w in want]
        for key in ("stars", "score"):  # float32 in Parquet, shortest float32 text in JSON
            assert np.array_equal(
                np.float32([g[key] for g in got]), np.float32([w[key] for w in want])
            )
    assert redis["bytes"] == total


def test_keep_prunes_old_generations_and_rollback_points_back(
    tmp_path: Path, tiny_bundle: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    gens = publish_runs(tiny_bundle, tmp_path, redis_server.url + "?prefix=k:&keep=2")
    r = redis_server.client()
    kept = {k.decode().split(":")[1] for k in r.scan_iter("k:*:*")}
    assert kept == set(gens[1:])  # the oldest generation was deleted
    assert r.get("k:current").decode() == gens[2]
    capsys.readouterr()
    assert run("publish", "rollback", redis_server.url, "--prefix", "k:") == 0
    assert r.get("k:current").decode() == gens[1]
    assert f"{gens[2]} -> {gens[1]}" in capsys.readouterr().err
    assert run("publish", "rollback", redis_server.url, "--prefix", "k:") == 5  # nothing older
    assert r.get("k:current").decode() == gens[1]
    assert run("publish", "status", redis_server.url, "--prefix", "k:") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["current"] == gens[1]


def test_a_rerun_of_the_same_run_id_is_idempotent(
    tmp_path: Path, tiny_bundle: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url + "?prefix=i:"
    r = redis_server.client()
    snapshots = []
    for _ in range(2):
        batchrank.score(
            model=tiny_bundle, pairs=["all"], out=tmp_path / "top.parquet", publish=url,
            run_id="same-run", progress="none",
        )  # fmt: skip
        snapshots.append({k: r.get(k) for k in r.scan_iter("i:same-run:*")})
        assert r.get("i:current") == b"same-run"
    assert snapshots[0] == snapshots[1] and len(snapshots[0]) > 0
    assert r.zrange("i:history", 0, -1) == [b"same-run"]


def test_a_job_publishes_files_then_redis_and_success_lists_both(
    tmp_path: Path, tiny_bundle: Path, redis_server: RedisServer
) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "tiny"\n[score]\nmodel = "{tiny_bundle}"\npairs = ["all"]\n'
        f'out = "{tmp_path}/exports/{{date}}/top.parquet"\n'
        f'[publish.redis]\nurl = "{redis_server.url}"\nvalue = "compact"\n'
    )
    assert run("run", str(job), "--date", "2025-01-31") == 0
    folder = tmp_path / "exports" / "2025-01-31"
    success = json.loads((folder / "_SUCCESS").read_text())
    assert success["sinks"] == ["files", "redis"]
    generation = success["redis"]["generation"]
    assert generation == success["run_id"] and success["redis"]["prefix"] == "batchrank:tiny:"
    r = redis_server.client()
    assert r.get("batchrank:tiny:current").decode() == generation
    rows = pq.read_table(folder / "top.parquet").to_pylist()
    first = rows[0]["user_id"]
    want = [row["movie_id"] for row in rows if row["user_id"] == first]
    assert json.loads(r.get(f"batchrank:tiny:{generation}:{first}")) == want


def test_the_password_never_reaches_the_manifest_logs_or_success(
    tmp_path: Path, tiny_bundle: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cret-Pa55"
    server = RedisServer(tmp_path / "redis", "--requirepass", secret)
    try:
        url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
        job = tmp_path / "job.toml"
        job.write_text(
            f'[job]\nname = "pw"\n[score]\nmodel = "{tiny_bundle}"\npairs = ["all"]\n'
            f'out = "{tmp_path}/exports/{{date}}/top.parquet"\n[publish.redis]\nurl = "x"\n'
        )
        code = run(
            "run", str(job), "--date", "2025-01-31", "--set", f"publish.redis.url={url}",
            "--log-format", "json",
        )  # fmt: skip
        assert code == 0
        captured = capfd.readouterr()
        folder = tmp_path / "exports" / "2025-01-31"
        texts = [captured.out.encode(), captured.err.encode()]
        texts += [p.read_bytes() for p in folder.iterdir()]
        assert len(texts) == 5 and all(secret.encode() not in t for t in texts)
        assert "redis://:***@127.0.0.1" in (folder / "top.parquet.manifest.json").read_text()
    finally:
        server.stop()
