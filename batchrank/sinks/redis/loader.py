"""The bulk loader: ``SET`` commands in large pipelined batches, the replies counted.

Each ranked table is encoded column-wise (:mod:`.values`) in slices of :data:`BATCH_USERS`
users, :data:`ENCODERS` at a time in threads; one thread owns the socket and sends a batch
while the previous one's replies are read, so the server always has work queued and nothing
waits a round trip per batch. At most two batches are in
flight: after a connection error the loader reconnects (bounded retries with backoff) and sends
them again (``SET`` is idempotent).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from batchrank.errors import OutputError
from batchrank.scoring.writers import run_starts
from batchrank.sinks.redis.protocol import Connection, LinkError, backoff
from batchrank.sinks.redis.target import RedisTarget
from batchrank.sinks.redis.values import Encoded, set_commands

__all__ = ["BATCH_USERS", "Loader"]

log = logging.getLogger("batchrank.publish")

BATCH_USERS = 16_384
"""Users per pipelined batch (about 16 MB for 10-item JSON lists)."""
ENCODERS = max(1, min(4, (os.cpu_count() or 1)))
"""Batches encoded at once, in threads (polars and Arrow kernels release the GIL)."""


class Loader:
    """Load users' lists under ``key_prefix`` on a connection; count what the server acked."""

    def __init__(
        self,
        target: RedisTarget,
        connection: Connection,
        key_prefix: str,
        *,
        reconnect: Callable[[], Connection] | None = None,
        batch_users: int = BATCH_USERS,
    ) -> None:
        self.target = target
        self.conn = connection
        self.key_prefix = key_prefix
        self.batch_users = batch_users
        self._reconnect = reconnect or (lambda: Connection(target))
        self._inflight: deque[Encoded] = deque()
        self._pending = bytearray()
        self._failures = 0
        self.sent_users = 0
        self.acked = 0
        self.key_bytes = 0
        self.value_bytes = 0
        # The socket is this thread's alone: it sends and counts replies while the caller
        # encodes the next batch (polars, Arrow and socket I/O run without the GIL).
        self._queue: queue.Queue[Encoded | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="redis-loader", daemon=True)
        self._thread.start()
        self._pool = ThreadPoolExecutor(ENCODERS, thread_name_prefix="redis-encode")
        self._encoding: deque[Future[Encoded]] = deque()

    def write(self, table: pa.Table) -> None:
        """Load the users of ``table`` (ranked rows of complete users, grouped)."""
        if table.num_rows == 0:
            return
        starts = run_starts(table.column("user_id"))
        bounds = [*starts[:: self.batch_users].tolist(), table.num_rows]
        for lo, hi in itertools.pairwise(bounds):
            self._encoding.append(
                self._pool.submit(
                    set_commands, table.slice(lo, hi - lo), self.key_prefix, self.target.value
                )
            )
            while len(self._encoding) > ENCODERS:
                self._queue_next()

    def _queue_next(self) -> None:
        batch = self._encoding.popleft().result()
        self.sent_users += batch.users
        self.key_bytes += batch.key_bytes
        self.value_bytes += batch.value_bytes
        self._put(batch)

    def _put(self, batch: Encoded | None) -> None:
        while True:
            self._raise()
            try:
                self._queue.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (batch := self._queue.get()) is not None:
                self._send(batch)
            while self._inflight:
                self._guarded(self._ack_oldest)
        except BaseException as e:  # handed to the caller's thread
            self._error = e

    def abort(self) -> None:
        """Stop the sending thread without waiting for replies (the load failed elsewhere)."""
        self._aborted = True
        for f in self._encoding:
            f.cancel()
        self._pool.shutdown(wait=False)
        self.conn.close()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(0.1)

    _aborted = False

    def _send(self, batch: Encoded) -> None:
        self._inflight.append(batch)
        self._guarded(lambda: self.conn.send(batch.data), send=True)
        while len(self._inflight) > 1:
            self._guarded(self._ack_oldest)

    def _ack_oldest(self) -> None:
        batch = self._inflight[0]
        self.conn.count_ok(batch.users, self._pending)
        self._inflight.popleft()
        self.acked += batch.users

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
        """Reconnect and resend every in-flight batch, with bounded retries and backoff."""
        while True:
            if self._failures >= self.target.retries or self._aborted:
                raise error
            self._failures += 1
            delay = backoff(self._failures)
            log.warning(
                "%s; reconnecting (retry %d of %d in %.1f s)",
                error,
                self._failures,
                self.target.retries,
                delay,
                extra={"event": "redis_retry"},
            )
            time.sleep(delay)
            self.conn.close()
            self._pending.clear()
            try:
                self.conn = self._reconnect()
                for b in self._inflight:
                    self.conn.send(b.data)
                return
            except LinkError as e:
                error = e

    def finish(self) -> int:
        """Wait for every reply; return the number of keys the server acknowledged.

        Raises:
            OutputError: a reply was an error, the connection failed past the retries, or the
                acknowledged count differs from the users sent.
        """
        while self._encoding:
            self._queue_next()
        self._pool.shutdown()
        self._put(None)
        self._thread.join()
        self._raise()
        if self.acked != self.sent_users:
            raise OutputError(
                f"{self.target.display}: the server acknowledged {self.acked} of "
                f"{self.sent_users} keys under {self.key_prefix}"
            )
        return self.acked
