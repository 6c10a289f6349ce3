"""A small RESP2 client: one socket (TLS for ``rediss://``), control commands, and bulk writes.

Control commands (``GET``, ``HSET``, ``SCAN``...) are encoded here and their replies parsed by
``hiredis`` (the C parser redis-py uses). The bulk load bypasses per-command parsing: it sends
protocol bytes built elsewhere (:mod:`.values`) and counts the one-line replies (``+OK`` or an
error) in the received bytes, as ``redis-cli --pipe`` does.

Every failure is an :class:`~batchrank.errors.OutputError` naming the target (its password
redacted): :class:`ReplyError` for an error reply (not retried: AUTH, OOM), and
:class:`LinkError` for a lost connection or a timeout (retried by :func:`with_retries`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from batchrank.errors import ConfigError, OutputError
from batchrank.fs import redact
from batchrank.sinks.redis.target import RedisTarget

__all__ = [
    "REDIRECTS",
    "Connection",
    "LinkError",
    "ReplyError",
    "backoff",
    "encode",
    "with_retries",
]

log = logging.getLogger("batchrank.publish")

T = TypeVar("T")
_RECV = 1 << 20
_OK = b"+OK\r\n"


class LinkError(OutputError):
    """The connection failed, closed or timed out (worth a retry)."""


class ReplyError(OutputError):
    """The server answered with an error (``-OOM ...``, ``-WRONGPASS ...``, ``-MOVED ...``)."""

    def __init__(self, message: str, *, reply: str = "") -> None:
        super().__init__(message)
        self.reply = reply
        """The server's error reply, without the ``-`` (password redacted)."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_reply_error, (str(self), self.reply))


def _reply_error(message: str, reply: str) -> ReplyError:
    return ReplyError(message, reply=reply)


REDIRECTS = (b"MOVED ", b"ASK ")
"""A cluster node's answers for a key another node serves (``-MOVED slot host:port``)."""


def _bulk(arg: bytes | str | int) -> bytes:
    b = arg if isinstance(arg, bytes) else str(arg).encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


def encode(*args: bytes | str | int) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


def _hint(reply: str) -> str:
    if reply.startswith("OOM"):
        return " (the server is full: raise maxmemory or free memory)"
    if reply.startswith(("WRONGPASS", "NOAUTH", "NOPERM")) or "password" in reply:
        return " (check the user and password of the URL)"
    if "cluster mode" in reply:
        return " (a Redis Cluster has database 0 only: end the URL with /0)"
    return ""


class Connection:
    """A connected, authenticated client on ``target``'s database."""

    def __init__(self, target: RedisTarget) -> None:
        try:
            import hiredis
        except ImportError:  # pragma: no cover - the redis extra is missing
            raise ConfigError(
                "publishing to Redis needs the redis extra: pip install 'batchrank[redis]'"
            ) from None
        self.target = target
        self._reader = hiredis.Reader()
        self._sock = self._connect()
        try:
            if target.password is not None:
                auth = (target.username, target.password) if target.username else (target.password,)
                self.call("AUTH", *auth)
            if target.db:
                self.call("SELECT", target.db)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> socket.socket:
        t = self.target
        try:
            sock = socket.create_connection((t.host, t.port), timeout=t.timeout)
        except OSError as e:
            raise self.link_error("cannot connect", e) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if t.tls:
            try:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=t.host)
            except (OSError, ssl.SSLError) as e:
                sock.close()
                raise self.link_error("TLS handshake failed", e) from None
        return sock

    def link_error(self, what: str, e: BaseException | str) -> LinkError:
        why = (
            "timed out"
            if isinstance(e, TimeoutError | socket.timeout)
            else str(e) or type(e).__name__
        )
        if isinstance(e, TimeoutError | socket.timeout):
            why = f"no reply within {self.target.timeout:g} s"
        return LinkError(f"{self.target.display}: {what} ({redact(why)})")

    def reply_error(self, command: str, reply: str) -> ReplyError:
        reply = redact(reply.strip())
        message = f"{self.target.display}: {command} refused: {reply}{_hint(reply)}"
        return ReplyError(message, reply=reply)

    def run_id(self) -> str:
        """The server process's ``run_id`` (``INFO server``): a new one after a restart; empty
        where the user may not run ``INFO`` (a restart then goes unnoticed)."""
        try:
            info = self.call("INFO", "server")
        except ReplyError:
            return ""
        text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
        return next((ln[7:].strip() for ln in text.splitlines() if ln.startswith("run_id:")), "")

    def close(self) -> None:
        """Close the socket (safe to call twice)."""
        with contextlib.suppress(OSError, AttributeError):
            self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw I/O ----------------------------------------------------------------------------

    def send(self, data: bytes | memoryview) -> None:
        """Send bytes (whole commands)."""
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise self.link_error("connection lost while writing", e) from None

    def recv(self) -> bytes:
        """Some received bytes (never empty)."""
        try:
            data = self._sock.recv(_RECV)
        except OSError as e:
            raise self.link_error("connection lost while reading replies", e) from None
        if not data:
            raise self.link_error("connection lost while reading replies", "closed by the server")
        return data

    # -- control commands -------------------------------------------------------------------

    def call(self, *args: bytes | str | int) -> Any:
        """Run one command and return its parsed reply."""
        return self.pipeline([args])[0]

    def pipeline(self, commands: Sequence[Sequence[bytes | str | int]]) -> list[Any]:
        """Send commands at once; return their replies (raise on the first error reply)."""
        import hiredis

        self.send(b"".join(encode(*c) for c in commands))
        replies: list[Any] = []
        while len(replies) < len(commands):
            reply = self._reader.gets()
            if reply is False:
                self._reader.feed(self.recv())
                continue
            if isinstance(reply, hiredis.ReplyError):
                name = commands[len(replies)][0]
                raise self.reply_error(
                    name.decode() if isinstance(name, bytes) else str(name), str(reply)
                )
            replies.append(reply)
        return replies

    # -- bulk writes ------------------------------------------------------------------------

    def count_ok(self, expected: int, pending: bytearray) -> list[tuple[int, bytes]]:
        """Read until ``expected`` one-line replies (``+OK``) arrived; return the cluster
        redirections among them (``MOVED``/``ASK`` lines by reply index); raise on any other
        error reply.

        ``pending`` carries bytes received past the last complete reply between calls.
        """
        seen = pending.count(b"\n")
        while seen < expected:
            data = self.recv()
            pending += data
            seen += data.count(b"\n")
        if not expected:
            return []
        newlines = np.flatnonzero(np.frombuffer(pending, np.uint8) == 10)  # the view is freed
        end = int(newlines[expected - 1]) + 1
        head = bytes(pending[:end])
        del pending[:end]
        if head.count(_OK) == expected:
            return []
        redirected: list[tuple[int, bytes]] = []
        for index, line in enumerate(head.split(b"\r\n")[:expected]):
            if line.startswith(b"+"):
                continue
            reply = line.removeprefix(b"-")
            if not reply.startswith(REDIRECTS):
                raise self.reply_error("SET", reply.decode("utf-8", "replace"))
            redirected.append((index, reply))
        return redirected


def backoff(retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1-based): 0.2, 0.4, 0.8... at most 5."""
    return min(5.0, 0.2 * 2 ** (retry - 1))


def with_retries(target: RedisTarget, what: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt``; after a :class:`LinkError` retry up to ``target.retries`` times, waiting
    0.2 s, 0.4 s, ... (at most 5 s) in between. Error replies are not retried."""
    tries = 0
    while True:
        try:
            return attempt()
        except LinkError as e:
            if tries >= target.retries:
                raise
            tries += 1
            delay = backoff(tries)
            log.warning(
                "%s: %s; retry %d of %d in %.1f s",
                what,
                e,
                tries,
                target.retries,
                delay,
                extra={"event": "redis_retry"},
            )
            time.sleep(delay)
