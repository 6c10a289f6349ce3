"""The servers behind a target: one ``redis-server``, or the primaries of a Redis Cluster.

A cluster is detected, not configured: the URL's node is asked ``CLUSTER SLOTS`` (which
primary serves each hash slot; what redis-py's ``RedisCluster`` and the other cluster clients
read). A server without cluster support answers it with an error and is a single server;
otherwise :class:`Nodes` routes every command by its key's slot (:mod:`.slots`). Only
``CLUSTER SLOTS`` is needed, not ``INFO`` (which restricted ACL users often lack); on a
cluster the user must be allowed it, as with any cluster client (refused, the publisher takes
the node for a single server and fails loudly at the first ``CROSSSLOT``). The same
``redis://host:port/0`` then names a single server or any node of a cluster.

A command answered ``-MOVED slot host:port`` (the slot moved: a resharding) is sent again to
that node and the slot map is read again before the next command; ``-ASK slot host:port``
(the slot is migrating now) is sent to that node once, after ``ASKING``. A single server is a
"cluster" of one node that serves every slot, so callers have one code path.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from batchrank.errors import OutputError
from batchrank.sinks.redis.protocol import (
    REDIRECTS,
    Connection,
    LinkError,
    ReplyError,
    with_retries,
)
from batchrank.sinks.redis.slots import SLOTS, hash_slots, key_slot
from batchrank.sinks.redis.target import RedisTarget

__all__ = ["MAX_REDIRECTS", "Addr", "Nodes", "Topology", "parse_redirect"]

Addr = tuple[str, int]
MAX_REDIRECTS = 5
"""Redirections one key may follow before the run fails (a cluster resharding in circles)."""
_UNLINK_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Topology:
    """Which primary serves each slot: ``owner[slot]`` indexes ``addrs``; a single server has
    no ``owner``."""

    addrs: tuple[Addr, ...]
    owner: np.ndarray | None = None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _topology(reply: Sequence[Any], target: RedisTarget, seed: Addr) -> Topology:
    """``CLUSTER SLOTS``: ``[start, end, [host, port, id], replicas...]`` per slot range."""
    owner = np.full(SLOTS, -1, np.int32)
    addrs: list[Addr] = []
    for start, end, primary, *_ in reply:
        host = _text(primary[0]) if primary[0] is not None else ""
        # an unknown endpoint ("" or "?") is the host this client reached the cluster on
        addr = (host if host not in ("", "?") else seed[0], int(primary[1]))
        if addr not in addrs:
            addrs.append(addr)
        owner[int(start) : int(end) + 1] = addrs.index(addr)
    missing = int((owner < 0).sum())
    if missing:
        raise OutputError(
            f"{target.display}: the cluster serves {SLOTS - missing} of {SLOTS} hash slots; "
            "fix it first (redis-cli --cluster fix)"
        )
    return Topology(tuple(addrs), owner)


def parse_redirect(reply: bytes | str, default_host: str) -> tuple[str, int, Addr]:
    """``MOVED 3999 127.0.0.1:6381`` → ``("MOVED", 3999, ("127.0.0.1", 6381))``."""
    kind, slot, where = _text(reply).split()[:3]
    host, _, port = where.rpartition(":")
    return kind, int(slot), (host.strip("[]") or default_host, int(port))


class Nodes:
    """Connections to a target's primaries, opened on first use, and the slot map."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self.seed: Addr = (target.host, target.port)
        self._conns: dict[Addr, Connection] = {}
        self._stale = False
        try:
            self.topology = with_retries(target, "connect", self._discover)
        except BaseException:
            self.close()
            raise

    @property
    def cluster(self) -> bool:
        """Whether the target is a Redis Cluster."""
        return self.topology.owner is not None

    def display(self, addr: Addr) -> str:
        """A node as messages show it (the URL with that node's address)."""
        return self.node_target(addr).display

    def node_target(self, addr: Addr) -> RedisTarget:
        """The target with ``addr`` for its host and port (the same user, password, TLS)."""
        if addr == self.seed:
            return self.target
        return dataclasses.replace(self.target, host=addr[0], port=addr[1])

    def connection(self, addr: Addr) -> Connection:
        """The open connection to ``addr`` (opened now if there is none)."""
        conn = self._conns.get(addr)
        if conn is None:
            conn = self._conns[addr] = Connection(self.node_target(addr))
        return conn

    def connect(self, addr: Addr) -> Connection:
        """A new connection to ``addr``, for the caller alone."""
        return Connection(self.node_target(addr))

    def _discover(self) -> Topology:
        """Ask the seed node (else another known primary) what it is and who serves what."""
        known = getattr(self, "topology", Topology((self.seed,))).addrs
        error: LinkError | None = None
        for addr in dict.fromkeys([self.seed, *known]):
            try:
                conn = self.connection(addr)
                try:
                    reply = conn.call("CLUSTER", "SLOTS")
                except ReplyError:  # "cluster support disabled", or a proxy's refusal
                    return Topology((self.seed,))
                return _topology(reply, self.target, self.seed)
            except LinkError as e:
                self.drop(addr)
                error = error or e
        assert error is not None
        raise error

    def refresh(self) -> None:
        """Read the slot map again (after a ``MOVED``)."""
        self.topology = self._discover()
        self._stale = False

    def moved(self) -> None:
        """A slot moved: read the slot map again before the next routed command."""
        self._stale = True

    def current(self) -> Topology:
        """The slot map, read again first if a slot moved."""
        if self._stale:
            self.refresh()
        return self.topology

    def addr_of(self, key: bytes | str) -> Addr:
        """The primary that serves ``key``."""
        topology = self.current()
        if topology.owner is None:
            return topology.addrs[0]
        return topology.addrs[int(topology.owner[key_slot(key)])]

    def primaries(self) -> tuple[Addr, ...]:
        """Every primary (the one server, for a single server)."""
        return self.current().addrs

    def call(self, key: bytes | str, *args: bytes | str | int) -> Any:
        """Run one command on the primary serving ``key``, following redirections."""
        addr, asking = self.addr_of(key), False
        for _ in range(MAX_REDIRECTS + 1):
            conn = self.connection(addr)
            try:
                if asking:
                    return conn.pipeline([("ASKING",), args])[1]
                return conn.call(*args)
            except ReplyError as e:
                if not e.reply.encode().startswith(REDIRECTS):
                    raise
                kind, _, addr = parse_redirect(e.reply, addr[0])
                asking = kind == "ASK"
                if not asking:
                    self.moved()
        raise OutputError(
            f"{self.target.display}: {_text(args[0])} {_text(key)}: redirected more than "
            f"{MAX_REDIRECTS} times (is the cluster resharding? run again when it is done)"
        )

    def scan(self, addr: Addr, pattern: str) -> Iterator[list[bytes]]:
        """The keys matching ``pattern`` on one node, a ``SCAN`` page at a time."""
        cursor: Any = b"0"
        while True:
            cursor, keys = self.connection(addr).call(
                "SCAN", cursor, "MATCH", pattern, "COUNT", 10_000
            )
            if keys:
                yield keys
            if cursor in (b"0", 0, "0"):
                return

    def unlink(self, addr: Addr, keys: list[bytes]) -> int:
        """``UNLINK`` keys found on ``addr``, in batches (one slot per command on a cluster,
        where a multi-key command must not cross slots); return how many were deleted."""
        batches: list[list[bytes]] = []
        if self.cluster:
            slots = hash_slots(pa.array(keys, pa.binary()))
            order = np.argsort(slots, kind="stable")
            bounds = np.flatnonzero(np.diff(slots[order])) + 1
            for group in np.split(order, bounds):
                picked = [keys[i] for i in group]
                batches += [
                    picked[lo : lo + _UNLINK_BATCH] for lo in range(0, len(picked), _UNLINK_BATCH)
                ]
        else:
            batches = [keys[lo : lo + _UNLINK_BATCH] for lo in range(0, len(keys), _UNLINK_BATCH)]
        deleted = 0
        for lo in range(0, len(batches), _UNLINK_BATCH):
            chunk = batches[lo : lo + _UNLINK_BATCH]
            try:
                replies = self.connection(addr).pipeline([("UNLINK", *b) for b in chunk])
            except ReplyError as e:  # a slot moved while deleting: one command at a time
                if not e.reply.encode().startswith(REDIRECTS):
                    raise
                self.drop(addr)  # the rest of the pipeline's replies are unread
                replies = [self.call(b[0], "UNLINK", *b) for b in chunk]
            deleted += sum(int(r) for r in replies)
        return deleted

    def drop(self, addr: Addr) -> None:
        """Close the connection to ``addr`` (the next command opens another)."""
        conn = self._conns.pop(addr, None)
        if conn is not None:
            conn.close()

    def reset(self) -> None:
        """After a lost connection: close them all and read the slot map again before the
        next command."""
        self.close()
        self._stale = self.cluster

    def close(self) -> None:
        """Close every connection (safe to call twice)."""
        for addr in list(self._conns):
            with contextlib.suppress(OSError):
                self.drop(addr)
