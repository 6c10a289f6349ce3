"""A real ``redis-server`` for tests: a free 127.0.0.1 port, persistence off, stopped after.

``redis_server`` (a fixture, registered in tests/conftest.py) starts one per test; tests that
need a password or a memory limit start their own :class:`RedisServer`. :class:`CutProxy`
forwards a connection to a server and cuts it after a number of bytes (optionally killing the
server there), which is how the tests make a server go away in the middle of a load.
:class:`RedisCluster` is a real three-primary Redis Cluster made by ``redis-cli --cluster
create``; a node may be announced at a proxy's port, so that clients reach it through a
:class:`CutProxy`.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrank.sinks.redis.server import LocalCluster, LocalRedis, free_port

__all__ = ["CutProxy", "RedisCluster", "RedisServer", "free_port", "redis_server"]

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


class RedisServer(LocalRedis):
    """:class:`~batchrank.sinks.redis.server.LocalRedis`, failing the test when no
    ``redis-server`` is installed, with a redis-py client for checks."""

    def __init__(self, folder: Path, *args: str, port: int | None = None) -> None:
        if REDIS_SERVER is None:
            pytest.fail(
                "redis-server is not installed: run .ci/ensure-redis-server (make test does)"
            )
        super().__init__(folder, *args, port=port)

    def client(self, password: str | None = None, db: int = 0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, password=password)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


class CutProxy:
    """Forward connections on a free port (or ``listen``) to ``port``; after ``cut_after``
    bytes from the clients in all, close every connection, refuse new ones and run ``on_cut``."""

    def __init__(
        self,
        port: int,
        cut_after: int,
        on_cut: Callable[[], None] | None = None,
        *,
        listen: int = 0,
        reopen: bool = False,
    ) -> None:
        self.upstream = port
        self.reopen = reopen
        """After the cut, go on forwarding new connections (to a restarted server)."""
        self.cut_after = cut_after
        self.on_cut = on_cut
        self.forwarded = 0
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", listen))
        self.port = int(self.listener.getsockname()[1])
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self.cut.is_set() or self.reopen:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set() and not self.reopen:
                client.close()
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                if (
                    counted
                    and not self.cut.is_set()
                    and self.forwarded + len(data) > self.cut_after
                ):
                    dst.sendall(data[: self.cut_after - self.forwarded])  # up to the cut
                    self.forwarded = self.cut_after
                    time.sleep(0.2)  # let the server execute what it received
                    self._cut()
                    return
                if counted:
                    self.forwarded += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)

    def _cut(self) -> None:
        if self.cut.is_set():
            return
        self.cut.set()
        if self.on_cut is not None:
            self.on_cut()
        if not self.reopen:
            self.listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._cut()
        self.listener.close()


class RedisCluster(LocalCluster):
    """:class:`~batchrank.sinks.redis.server.LocalCluster` of three :class:`RedisServer`
    (failing the test when ``redis-cli`` is missing), with checks that ask the cluster."""

    nodes: list[RedisServer]  # type: ignore[assignment]

    def __init__(self, folder: Path, announce: dict[int, int] | None = None) -> None:
        if REDIS_CLI is None:
            pytest.fail("redis-cli is not installed: run .ci/ensure-redis-server (make test does)")
        super().__init__(folder, 3, announce=announce, server=RedisServer)

    def slot_owners(self) -> list[int]:
        """Each slot's node (its index in :attr:`nodes`), by the first node's ``CLUSTER SLOTS``."""
        ids = [self.node_id(n) for n in self.nodes]
        owners = [-1] * 16384
        for start, end, primary, *_ in self.nodes[0].client().execute_command("CLUSTER", "SLOTS"):
            owners[start : end + 1] = [ids.index(primary[2].decode())] * (end - start + 1)
        return owners

    def slot(self, key: str) -> int:
        """``CLUSTER KEYSLOT key`` (asked of the cluster, not computed here)."""
        return int(self.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", key))

    def owner(self, key: str) -> RedisServer:
        """The node serving ``key`` now."""
        return self.nodes[self.slot_owners()[self.slot(key)]]

    @staticmethod
    def node_id(node: RedisServer) -> str:
        return str(node.client().execute_command("CLUSTER", "MYID").decode())
