"""Redis going wrong mid-publish: one line naming the target (password hidden), exit 5,
``current`` unchanged, nothing else published, and the next run cleans up."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.jobs.test_job_run import _clean_env, run  # noqa: F401 (autouse: no BATCHRANK_*)
from tests.redis_server import CutProxy, RedisServer


def score(bundle: Path, out: Path, url: str) -> int:
    return run(
        "score", "--model", str(bundle), "--pairs", "all", "--out", str(out), "--publish", url,
        "--quiet",
    )  # fmt: skip


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line (retry warnings may come before it); no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("batchrank: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def published(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if not p.name.startswith("."))


def test_connection_cut_mid_load_keeps_readers_on_the_previous_generation(
    tmp_path: Path, tiny_bundle: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "a" / "top.parquet"
    assert score(tiny_bundle, first, redis_server.url + "?prefix=c:") == 0
    r = redis_server.client()
    previous = r.get("c:current").decode()
    before = {k: r.get(k) for k in r.scan_iter(f"c:{previous}:*")}
    capsys.readouterr()
    proxy = CutProxy(redis_server.port, cut_after=20_000)
    out = tmp_path / "b" / "top.parquet"
    assert score(tiny_bundle, out, proxy.url + "?prefix=c:&retries=1") == 5
    line = error_line(capsys)
    assert f"redis://127.0.0.1:{proxy.port}/0" in line and "connect" in line
    assert proxy.cut.is_set()
    assert r.get("c:current").decode() == previous  # readers still see the old lists
    assert {k: r.get(k) for k in r.scan_iter(f"c:{previous}:*")} == before
    assert not out.exists() and published(out) == []  # no file published either
    partial = [g.decode() for g in r.hkeys("c:generations") if g.decode() != previous]
    assert len(partial) == 1 and any(r.scan_iter(f"c:{partial[0]}:*"))  # half loaded
    third = tmp_path / "c" / "top.parquet"
    assert score(tiny_bundle, third, redis_server.url + "?prefix=c:") == 0
    assert not any(r.scan_iter(f"c:{partial[0]}:*"))  # the next run deleted it
    assert partial[0].encode() not in r.hkeys("c:generations")


def test_server_killed_mid_load_fails_the_run_and_publishes_nothing(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        proxy = CutProxy(server.port, cut_after=20_000, on_cut=server.kill)
        out = tmp_path / "out" / "top.parquet"
        assert score(tiny_bundle, out, proxy.url + "?retries=2") == 5
        line = error_line(capsys)
        assert f"redis://127.0.0.1:{proxy.port}/0" in line
        assert server.proc.poll() is not None  # it really went away
        assert not out.exists() and published(out) == []
    finally:
        server.stop()


def test_a_server_restarted_mid_load_is_not_trusted_with_what_it_acknowledged(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = [RedisServer(tmp_path / "redis")]

    def restart() -> None:  # the same address, a new process with none of the keys
        servers[0].kill()
        servers.append(RedisServer(tmp_path / "redis2", port=servers[0].port))

    try:
        proxy = CutProxy(servers[0].port, cut_after=20_000, on_cut=restart, reopen=True)
        out = tmp_path / "out" / "top.parquet"
        assert score(tiny_bundle, out, proxy.url + "?retries=2") == 5
        line = error_line(capsys)
        assert f"redis://127.0.0.1:{proxy.port}/0" in line and "restarted" in line
        assert len(servers) == 2 and not out.exists() and published(out) == []
    finally:
        proxy.close()
        for server in servers:
            server.stop()


def test_wrong_password_is_one_line_with_the_password_hidden(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = RedisServer(tmp_path / "redis", "--requirepass", "right-one")
    try:
        out = tmp_path / "out" / "top.parquet"
        url = f"redis://:wr0ng-pa55@127.0.0.1:{server.port}/0"
        assert score(tiny_bundle, out, url) == 5
        line = error_line(capsys)
        assert "wr0ng-pa55" not in line
        assert f"redis://:***@127.0.0.1:{server.port}/0" in line and "password" in line
        assert not out.parent.exists() or published(out) == []  # refused before any work
    finally:
        server.stop()


def test_a_full_server_fails_with_oom_and_leaves_current(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = RedisServer(tmp_path / "redis", "--maxmemory-policy", "noeviction")
    try:
        r = server.client()
        assert score(tiny_bundle, tmp_path / "a" / "top.parquet", server.url + "?prefix=m:") == 0
        previous = r.get("m:current")
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory", used + 20_000)  # room for a fraction of a generation
        capsys.readouterr()
        out = tmp_path / "b" / "top.parquet"
        assert score(tiny_bundle, out, server.url + "?prefix=m:") == 5
        line = error_line(capsys)
        assert "OOM" in line and "maxmemory" in line and server.url in line
        assert r.get("m:current") == previous
        assert not out.exists()
        r.config_set("maxmemory", 0)
        assert score(tiny_bundle, tmp_path / "c" / "top.parquet", server.url + "?prefix=m:") == 0
        gens = {k.decode().split(":")[1] for k in r.scan_iter("m:*:*")}
        assert len(gens) == 2  # the previous and the new one; the partial one is gone
    finally:
        server.stop()


def test_a_server_that_stops_answering_times_out(
    tmp_path: Path, tiny_bundle: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    r = redis_server.client()
    r.set("t:current", "earlier")
    r.execute_command("CLIENT", "PAUSE", 4000, "ALL")
    out = tmp_path / "out" / "top.parquet"
    url = redis_server.url + "?prefix=t:&timeout=0.5&retries=1"
    code: list[int] = []
    worker = threading.Thread(target=lambda: code.append(score(tiny_bundle, out, url)))
    worker.start()
    worker.join(60)
    assert code == [5]
    line = error_line(capsys)
    assert redis_server.url in line and "no reply within 0.5 s" in line
    r.execute_command("CLIENT", "UNPAUSE")
    assert r.get("t:current") == b"earlier"


def test_bad_urls_are_config_errors_naming_the_flag(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "top.parquet"
    for url, words in [
        ("http://h:1/0", "redis:// or rediss://"),
        ("redis://:pw-in-url@h:1/x", "database must be a number"),
        ("redis://h:1/0?keep=0", "keep"),
        ("redis://h:1/0?colour=red", "unknown option"),
    ]:
        assert score(tiny_bundle, out, url) == 2
        line = error_line(capsys)
        assert line.count("--publish") >= 1 and words in line and "pw-in-url" not in line


def test_job_file_redis_section_errors_name_file_and_key(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "x"\n[score]\nmodel = "{tiny_bundle}"\npairs = ["all"]\n'
        f'out = "{tmp_path}/top.parquet"\n[publish.redis]\nurl = "redis://h/0"\nkeep = -1\n'
    )
    assert run("validate", str(job)) == 2
    line = error_line(capsys)
    assert f"{job}: [publish.redis] keep" in line
    job.write_text(job.read_text().replace("keep = -1", "kep = 3"))
    assert run("validate", str(job)) == 2
    assert "[publish.redis] unknown key `kep`" in error_line(capsys)
    assert json.loads('"ok"') == "ok"
