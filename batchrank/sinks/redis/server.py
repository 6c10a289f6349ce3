"""A throwaway local ``redis-server`` (free 127.0.0.1 port, persistence off), or a local Redis
Cluster of them, for the benchmark and the tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from batchrank.errors import ConfigError

__all__ = ["LocalCluster", "LocalRedis", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedis:
    """``redis-server`` on 127.0.0.1 with ``--save "" --appendonly no`` and extra arguments;
    stop it with :meth:`stop` (or use it as a context manager)."""

    def __init__(
        self, folder: Path, *args: str, binary: str | None = None, port: int | None = None
    ) -> None:
        exe = binary or shutil.which("redis-server")
        if exe is None:
            raise ConfigError("redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder), "--protected-mode", "no", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            if self.proc.poll() is not None:
                raise ConfigError(f"redis-server exited with {self.proc.returncode} at start")
            time.sleep(0.05)
        self.stop()
        raise ConfigError("redis-server did not start within 30 s")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL: the server goes away at once (its data with it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> LocalRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalCluster:
    """A Redis Cluster of ``primaries`` local servers (no replicas), joined by ``redis-cli
    --cluster create``; ``announce`` maps a node's index to the port it tells clients (a proxy's).
    ``server`` makes each node (a :class:`LocalRedis` or a subclass)."""

    def __init__(
        self,
        folder: Path,
        primaries: int = 3,
        *,
        announce: dict[int, int] | None = None,
        server: Callable[..., LocalRedis] = LocalRedis,
    ) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ConfigError("redis-cli is not installed (apt-get install redis-tools)")
        announce = announce or {}
        self.nodes: list[LocalRedis] = []
        try:
            for n in range(primaries):
                bus = free_port()  # the default, port + 10000, may be past 65535
                args = ["--cluster-enabled", "yes", "--cluster-port", str(bus),
                        "--cluster-config-file", str(folder / f"node{n}" / "nodes.conf"),
                        "--cluster-node-timeout", "5000"]  # fmt: skip
                if n in announce:
                    args += ["--cluster-announce-port", str(announce[n]),
                             "--cluster-announce-bus-port", str(bus)]  # fmt: skip
                self.nodes.append(server(folder / f"node{n}", *args))
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self._wait_ok()
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self) -> None:
        from batchrank.sinks.redis.protocol import Connection
        from batchrank.sinks.redis.target import target_of

        deadline = time.monotonic() + 30
        for node in self.nodes:
            with Connection(target_of(node.url)) as conn:
                while b"cluster_state:ok" not in conn.call("CLUSTER", "INFO"):
                    if time.monotonic() > deadline:
                        raise ConfigError("the local Redis Cluster was not ready within 30 s")
                    time.sleep(0.05)

    @property
    def url(self) -> str:
        """The first node's URL (any node's would do)."""
        return self.nodes[0].url

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
