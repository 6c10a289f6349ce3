"""The bulk loader: ``SET`` commands in large pipelined batches, the replies counted per node.

Each ranked table is encoded column-wise (:mod:`.values`) in slices of :data:`BATCH_USERS`
users, :data:`ENCODERS` at a time in threads. On a Redis Cluster the encoder also computes each
key's hash slot and groups the batch's users by the primary that serves it, so a batch becomes
one contiguous slice of protocol bytes per node. Every node has a :class:`_Writer`: one thread
that owns that node's socket and sends a part while the previous one's replies are read, so
each server always has work queued and nothing waits a round trip per batch. At most two parts
per node are in flight: after a connection error the writer reconnects to its node (bounded
retries with backoff) and sends them again (``SET`` is idempotent), unless the node restarted
meanwhile (a new ``run_id``: what it acknowledged before may be gone), which fails the load.

Replies that are redirections (``MOVED``/``ASK``: a slot moved while loading) are set aside
with their commands and sent to the node named, once every writer is done
(:meth:`Loader.finish`, at most :data:`~.cluster.MAX_REDIRECTS` rounds); the slot map is read
again for the next batches. The keys acknowledged, summed over the nodes, must equal the users
sent.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from batchrank.errors import OutputError
from batchrank.scoring.row_groups import run_starts
from batchrank.sinks.redis.cluster import MAX_REDIRECTS, Addr, Nodes, Topology, parse_redirect
from batchrank.sinks.redis.protocol import Connection, LinkError, backoff, with_retries
from batchrank.sinks.redis.target import RedisTarget
from batchrank.sinks.redis.values import Encoded, set_commands

__all__ = ["BATCH_USERS", "Loader"]

log = logging.getLogger("batchrank.publish")

BATCH_USERS = 16_384
"""Users per pipelined batch (about 16 MB for 10-item JSON lists)."""
ENCODERS = max(1, min(4, (os.cpu_count() or 1)))
"""Batches encoded at once, in threads (polars and Arrow kernels release the GIL)."""
_ASKING = b"*1\r\n$6\r\nASKING\r\n"


@dataclass(frozen=True)
class _Part:
    """One node's commands of a batch; ``offsets`` (a cluster's) delimit each user's."""

    data: memoryview
    users: int
    offsets: np.ndarray | None = None

    def command(self, index: int) -> bytes:
        assert self.offsets is not None
        return bytes(self.data[int(self.offsets[index]) : int(self.offsets[index + 1])])


def _parts(batch: Encoded, topology: Topology) -> list[tuple[Addr, _Part]]:
    if batch.nodes is None or batch.offsets is None:
        return [(topology.addrs[0], _Part(batch.data, batch.users))]
    bounds = [0, *(np.flatnonzero(np.diff(batch.nodes)) + 1).tolist(), batch.users]
    out = []
    for lo, hi in itertools.pairwise(bounds):
        off = batch.offsets[lo : hi + 1]
        part = _Part(batch.data[int(off[0]) : int(off[-1])], hi - lo, off - off[0])
        out.append((topology.addrs[int(batch.nodes[lo])], part))
    return out


class _Writer:
    """One node's socket, owned by one thread: sends parts, counts the ``+OK`` replies and sets
    redirected commands aside."""

    def __init__(self, target: RedisTarget, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self.retries = target.retries
        self.target = target
        self.conn = with_retries(target, "connect", connect)
        self._run_id = self.conn.run_id()
        self.acked = 0
        self.redirected: list[tuple[bytes, bytes]] = []
        """(command, reply) of every ``MOVED``/``ASK`` answer."""
        self._inflight: deque[_Part] = deque()
        self._pending = bytearray()
        self._failures = 0
        self._aborted = False
        self._queue: queue.Queue[_Part | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="redis-writer", daemon=True)
        self._thread.start()

    def put(self, part: _Part | None) -> None:
        """Queue a part (``None``: no more); raise the writer's error if it failed."""
        while True:
            self.check()
            try:
                self._queue.put(part, timeout=0.1)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def join(self) -> None:
        """Wait for the last reply; raise the writer's error."""
        self.put(None)
        self._thread.join()
        self.check()

    def _run(self) -> None:
        try:
            while (part := self._queue.get()) is not None:
                self._send(part)
            while self._inflight:
                self._guarded(self._ack_oldest)
        except BaseException as e:  # handed to the caller's thread
            self.error = e

    def abort(self) -> None:
        """Stop the thread without waiting for replies (the load failed elsewhere)."""
        self._aborted = True
        self.conn.close()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(0.1)

    def _send(self, part: _Part) -> None:
        self._inflight.append(part)
        self._guarded(lambda: self.conn.send(part.data), send=True)
        while len(self._inflight) > 1:
            self._guarded(self._ack_oldest)

    def _ack_oldest(self) -> None:
        part = self._inflight[0]
        redirected = self.conn.count_ok(part.users, self._pending)
        self._inflight.popleft()
        self.acked += part.users - len(redirected)
        self.redirected += [(part.command(i), reply) for i, reply in redirected]

    def _guarded(self, step: Callable[[], None], *, send: bool = False) -> None:
        """Run ``step``; after a lost connection reconnect and resend what is in flight, then
        (unless the step was a send, which the resend covers) run it again."""
        while True:
            try:
                step()
                return
            except LinkError as e:
                self._recover(e)
            if send:
                return

    def _recover(self, error: LinkError) -> None:
        """Reconnect and resend every in-flight part, with bounded retries and backoff."""
        while True:
            if self._failures >= self.retries or self._aborted:
                raise error
            self._failures += 1
            delay = backoff(self._failures)
            log.warning(
                "%s; reconnecting (retry %d of %d in %.1f s)",
                error,
                self._failures,
                self.retries,
                delay,
                extra={"event": "redis_retry"},
            )
            time.sleep(delay)
            self.conn.close()
            self._pending.clear()
            try:
                self.conn = self._connect()
                self._same_server()
                for p in self._inflight:
                    self.conn.send(p.data)
                return
            except LinkError as e:
                error = e

    def _same_server(self) -> None:
        """A server that restarted may have lost keys it acknowledged (persistence off, or
        not yet written): the load cannot go on as if they were there."""
        if self.conn.run_id() != self._run_id:
            raise OutputError(
                f"{self.target.display}: the server restarted during the load (its run_id "
                "changed), so keys it acknowledged before may be gone; run again"
            )


class Loader:
    """Load users' lists under ``key_prefix`` on a target's nodes; count what they acked."""

    def __init__(self, nodes: Nodes, key_prefix: str, *, batch_users: int = BATCH_USERS) -> None:
        self.nodes = nodes
        self.target = nodes.target
        self.key_prefix = key_prefix
        self.batch_users = batch_users
        self.sent_users = 0
        self.key_bytes = 0
        self.value_bytes = 0
        self.acked_by: dict[str, int] = {}
        """Keys acknowledged per node (``host:port``), after :meth:`finish`."""
        self._writers: dict[Addr, _Writer] = {}
        self._pool = ThreadPoolExecutor(ENCODERS, thread_name_prefix="redis-encode")
        self._encoding: deque[tuple[Topology, Future[Encoded]]] = deque()
        self._writer(nodes.primaries()[0])  # connect now: a refused connection fails here

    def _writer(self, addr: Addr) -> _Writer:
        writer = self._writers.get(addr)
        if writer is None:
            writer = _Writer(self.nodes.node_target(addr), lambda: self.nodes.connect(addr))
            self._writers[addr] = writer
        return writer

    def write(self, table: pa.Table) -> None:
        """Load the users of ``table`` (ranked rows of complete users, grouped)."""
        if table.num_rows == 0:
            return
        starts = run_starts(table.column("user_id"))
        bounds = [*starts[:: self.batch_users].tolist(), table.num_rows]
        for lo, hi in itertools.pairwise(bounds):
            if any(w.redirected for w in self._writers.values()):
                self.nodes.moved()  # later batches go by a fresh slot map
            topology = self.nodes.current()
            future = self._pool.submit(
                set_commands,
                table.slice(lo, hi - lo),
                self.key_prefix,
                self.target.value,
                topology.owner,
            )
            self._encoding.append((topology, future))
            while len(self._encoding) > ENCODERS:
                self._queue_next()

    def _queue_next(self) -> None:
        topology, future = self._encoding.popleft()
        batch = future.result()
        self.sent_users += batch.users
        self.key_bytes += batch.key_bytes
        self.value_bytes += batch.value_bytes
        for addr, part in _parts(batch, topology):
            self._writer(addr).put(part)

    def abort(self) -> None:
        """Stop every writer without waiting for replies (the load failed elsewhere)."""
        for _, f in self._encoding:
            f.cancel()
        self._pool.shutdown(wait=False)
        for w in self._writers.values():
            w.abort()

    def finish(self) -> int:
        """Wait for every reply; return the number of keys the nodes acknowledged.

        Raises:
            OutputError: a reply was an error, a connection failed past the retries, a key was
                redirected too often, or the acknowledged count differs from the users sent.
        """
        while self._encoding:
            self._queue_next()
        self._pool.shutdown()
        for w in self._writers.values():
            w.join()
        acked = {addr: w.acked for addr, w in self._writers.items()}
        redirected = [r for w in self._writers.values() for r in w.redirected]
        if redirected:
            self._follow(redirected, acked)
        self.acked_by = {f"{h}:{p}": n for (h, p), n in sorted(acked.items()) if n}
        total = sum(acked.values())
        if total != self.sent_users:
            raise OutputError(
                f"{self.target.display}: the server acknowledged {total} of "
                f"{self.sent_users} keys under {self.key_prefix}"
            )
        return total

    def _resend(self, addr: Addr, data: bytes, replies: int) -> list[tuple[int, bytes]]:
        with self.nodes.connect(addr) as conn:
            conn.send(data)
            return conn.count_ok(replies, bytearray())

    def _follow(self, redirected: list[tuple[bytes, bytes]], acked: dict[Addr, int]) -> None:
        """Send redirected commands to the nodes named, round after round."""
        log.info(
            "%s: %d keys redirected (the cluster resharded while loading); sending them on",
            self.target.display,
            len(redirected),
            extra={"event": "redis_redirect"},
        )
        self.nodes.moved()
        for _ in range(MAX_REDIRECTS):
            groups: dict[tuple[Addr, bool], list[bytes]] = {}
            for command, reply in redirected:
                kind, _, addr = parse_redirect(reply, self.target.host)
                groups.setdefault((addr, kind == "ASK"), []).append(command)
            redirected = []
            for (addr, asking), commands in groups.items():
                data = b"".join((_ASKING + c) if asking else c for c in commands)
                step = 2 if asking else 1  # ASKING's +OK, then the SET's reply
                again = with_retries(
                    self.nodes.node_target(addr),
                    "send redirected keys",
                    functools.partial(self._resend, addr, data, len(commands) * step),
                )
                redirected += [(commands[i // step], reply) for i, reply in again]
                acked[addr] = acked.get(addr, 0) + len(commands) - len(again)
            if not redirected:
                return
        raise OutputError(
            f"{self.target.display}: {len(redirected)} keys under {self.key_prefix} still "
            f"redirected after {MAX_REDIRECTS} rounds ({redirected[0][1].decode()}); the "
            "cluster is resharding: run again when it is done"
        )
