"""The bulk loader: ``SET`` commands in large pipelined batches, the replies counted.

Each ranked table is encoded column-wise (:mod:`.values`) in slices of :data:`BATCH_USERS`
users; a batch is sent while the previous one's replies are read, so the server always has
work queued and this process never waits a round trip per batch. At most two batches are in
flight: after a connection error the loader reconnects (bounded retries with backoff) and sends
them again (``SET`` is idempotent).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import pyarrow as pa

from batchrank.errors import OutputError
from batchrank.sinks.redis.protocol import Connection, LinkError, backoff
from batchrank.sinks.redis.target import RedisTarget
from batchrank.sinks.redis.values import Encoded, key_values, set_commands

__all__ = ["BATCH_USERS", "Loader"]

log = logging.getLogger("batchrank.publish")

BATCH_USERS = 16_384
"""Users per pipelined batch (about 16 MB for 10-item JSON lists)."""


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

    def write(self, table: pa.Table) -> None:
        """Load the users of ``table`` (ranked rows of complete users, grouped)."""
        if table.num_rows == 0:
            return
        kv = key_values(table, self.key_prefix, self.target.value)
        for lo in range(0, kv.height, self.batch_users):
            self._send(set_commands(kv.slice(lo, self.batch_users)))

    def _send(self, batch: Encoded) -> None:
        self.sent_users += batch.users
        self.key_bytes += batch.key_bytes
        self.value_bytes += batch.value_bytes
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
            if self._failures >= self.target.retries:
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
        while self._inflight:
            self._guarded(self._ack_oldest)
        if self.acked != self.sent_users:
            raise OutputError(
                f"{self.target.display}: the server acknowledged {self.acked} of "
                f"{self.sent_users} keys under {self.key_prefix}"
            )
        return self.acked
