"""A throwaway local ``redis-server`` (free 127.0.0.1 port, persistence off), for the benchmark
and the tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from batchrank.errors import ConfigError

__all__ = ["LocalRedis", "free_port"]


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
