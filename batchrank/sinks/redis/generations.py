"""Generations as the publish primitive: stage (load and verify), commit (one ``SET``), roll back.

- **stage** (:class:`RedisSink`): generations that dead runs left half-loaded are deleted; the
  new generation is marked ``loading`` in ``{prefix}generations``, every user's key
  ``{prefix}{generation}:{user_id}`` is loaded, and the number of keys the server acknowledged
  must equal the number of users written; then it is marked ``ready``.
- **commit** (:class:`RedisStaged`): ``SET {prefix}current <generation> GET``, one atomic
  command on one key, so readers see the old lists or the new ones, never a mix; the generation
  joins ``{prefix}history`` (scored by the server's clock).
- **rollback** (within a failed commit unit): ``current`` is pointed back and the generation
  deleted. **finalize**: committed generations beyond the newest ``keep`` are deleted with
  ``SCAN MATCH`` and batched ``UNLINK`` (freed off the server's main thread).

Every command touches one key, so nothing relies on keys sharing a cluster slot (no
``RENAME``, no multi-key transaction): on a Redis Cluster each goes to the primary serving its
key (:mod:`.cluster`), and deleting a generation scans every primary. ``batchrank publish``
is :mod:`.admin`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa

from batchrank.errors import OutputError
from batchrank.sinks.redis.cluster import Nodes
from batchrank.sinks.redis.loader import Loader
from batchrank.sinks.redis.protocol import LinkError, with_retries
from batchrank.sinks.redis.target import RedisTarget
from batchrank.storage.base import Committed, Staged

__all__ = ["Keyspace", "RedisSink", "RedisStaged", "now"]

log = logging.getLogger("batchrank.publish")

T = TypeVar("T")
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def _text(reply: Any) -> str | None:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def now() -> str:
    """UTC now, as generation records show it."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Keyspace:
    """The keys of one prefix on a target's nodes: ``current``, the generations and their data.

    Each command goes to the primary serving its key (:class:`~.cluster.Nodes`); deleting a
    generation scans every primary.
    """

    def __init__(self, target: RedisTarget, prefix: str, nodes: Nodes | None = None) -> None:
        self.target = target
        self.nodes = nodes if nodes is not None else Nodes(target)
        self.prefix = prefix
        self.current_key = prefix + "current"
        self.generations_key = prefix + "generations"
        self.history_key = prefix + "history"

    def retrying(self, what: str, step: Callable[[], T]) -> T:
        """Run ``step``; after a lost connection reconnect and run it again (bounded)."""

        def attempt() -> T:
            try:
                return step()
            except LinkError:
                self.nodes.reset()
                raise

        return with_retries(self.target, what, attempt)

    def lost(self) -> None:
        """Reconnect before the next command."""
        self.nodes.reset()

    def close(self) -> None:
        self.nodes.close()

    def call(self, key: str, *args: bytes | str | int) -> Any:
        """Run a command on ``key`` (on the node serving it)."""
        return self.nodes.call(key, *args)

    def current(self) -> str | None:
        return _text(self.call(self.current_key, "GET", self.current_key))

    def generations(self) -> dict[str, dict[str, Any]]:
        """Every known generation's state (``loading`` or ``ready``, keys, bytes...)."""
        flat = self.call(self.generations_key, "HGETALL", self.generations_key) or []
        out: dict[str, dict[str, Any]] = {}
        for name, raw in zip(flat[::2], flat[1::2], strict=True):
            try:
                info = json.loads(raw)
            except ValueError:
                info = {}
            out[_text(name) or ""] = info if isinstance(info, dict) else {}
        return out

    def history(self) -> list[str]:
        """Committed generations, newest first."""
        return [
            _text(g) or ""
            for g in self.call(self.history_key, "ZREVRANGE", self.history_key, 0, -1)
        ]

    def mark(self, generation: str, info: dict[str, Any]) -> None:
        record = json.dumps(info, sort_keys=True)
        self.call(self.generations_key, "HSET", self.generations_key, generation, record)

    def delete(self, generation: str) -> int:
        """Delete a generation's keys (``SCAN MATCH`` on every primary, batched ``UNLINK``)
        and its records."""
        pattern = (self.prefix + generation + ":").translate(_GLOB) + "*"
        deleted = 0
        for addr in self.nodes.primaries():
            for keys in self.nodes.scan(addr, pattern):
                deleted += self.nodes.unlink(addr, keys)
        self.call(self.generations_key, "HDEL", self.generations_key, generation)
        self.call(self.history_key, "ZREM", self.history_key, generation)
        return deleted

    def point(self, generation: str | None) -> str | None:
        """Point ``current`` at ``generation`` (or remove it); return what it named before."""
        if generation is None:
            before = self.current()
            self.call(self.current_key, "DEL", self.current_key)
            return before
        return _text(self.call(self.current_key, "SET", self.current_key, generation, "GET"))

    def prune(self, keep: int) -> list[str]:
        """Delete generations beyond the ``keep`` newest committed ones (the current one and
        those loading elsewhere are kept); return the deleted names."""
        current = self.current()
        history = self.history()
        kept = set(history[:keep]) | ({current} if current else set())
        gone = [g for g in history if g not in kept]
        for g, info in self.generations().items():
            if g not in kept and g not in gone and info.get("state") == "ready":
                gone.append(g)  # loaded but never committed (a failed unit's rollback)
        for g in gone:
            n = self.delete(g)
            log.info(
                "deleted generation %s of %s (%d keys)",
                g,
                self.prefix,
                n,
                extra={"event": "redis_prune", "generation": g},
            )
        return gone


class _RedisCommitted(Committed):
    def __init__(self, staged: RedisStaged, previous: str | None) -> None:
        self.staged = staged
        self.previous = previous

    def rollback(self) -> None:
        s = self.staged
        try:
            s.space.retrying("roll back current", lambda: s.space.point(self.previous))
            if self.previous != s.generation:  # an idempotent re-run keeps what it replaced
                s.space.retrying("delete the generation", lambda: s.space.delete(s.generation))
        finally:
            s.close()

    def finalize(self) -> None:
        s = self.staged
        try:
            s.space.retrying("prune", lambda: s.space.prune(s.sink.target.keep))
        except OutputError as e:  # the commit stands; the next run prunes again
            log.warning("%s (old generations are deleted by the next run)", e)
        finally:
            s.close()


class RedisStaged(Staged):
    """A loaded, verified generation that :meth:`commit` makes current."""

    def __init__(self, sink: RedisSink) -> None:
        self.sink = sink
        self.generation = sink.generation
        self.space = sink.space
        self._state = "staged"

    @property
    def path(self) -> Any:
        raise OutputError(f"{self.sink.target.display}: a Redis generation has no local path")

    def commit(self) -> Committed:
        if self._state != "staged":
            raise OutputError(f"{self.sink.where}: generation already committed or discarded")
        before = self.sink.before
        space = self.space
        try:
            # SET is atomic; after a lost reply the retry's GET answers this generation
            previous = space.retrying("commit", lambda: space.point(self.generation))
        except BaseException:
            self.discard()
            raise
        self._state = "committed"
        try:
            space.retrying(
                "record the commit",
                lambda: space.call(
                    space.history_key, "ZADD", space.history_key, _server_ms(space), self.generation
                ),
            )
        except OutputError as e:  # current is switched; only rollback's ordering lacks it
            log.warning(
                "%s: cannot record generation %s in the history (%s)",
                self.sink.where,
                self.generation,
                e,
            )
        log.info(
            "%s current -> %s (was %s)",
            self.sink.where,
            self.generation,
            previous,
            extra={"event": "redis_commit", "generation": self.generation},
        )
        return _RedisCommitted(self, before if previous == self.generation else previous)

    def discard(self) -> None:
        if self._state != "staged":
            return
        self._state = "discarded"
        self.sink.discard()

    def close(self) -> None:
        self.sink.close()


def _server_ms(space: Keyspace) -> int:
    seconds, micros = space.call(space.history_key, "TIME")  # the history's node's clock
    return int(seconds) * 1000 + int(micros) // 1000


class RedisSink:
    """Stage one generation: :meth:`write` the ranked tables, then :meth:`finish`."""

    def __init__(self, target: RedisTarget, *, prefix: str, generation: str) -> None:
        self.target = target
        self.generation = generation
        self.where = f"{target.display} {prefix}"
        self.space = Keyspace(target, prefix)
        try:
            self.before = self.space.current()
            self._clean(prefix)
            if generation != self.before:  # an idempotent re-run rewrites the current lists
                self.space.mark(generation, {"state": "loading", "started_at": now()})
            self.loader = Loader(self.space.nodes, prefix + generation + ":")
        except BaseException:
            self.close()
            raise
        self._report: dict[str, Any] | None = None

    def _clean(self, prefix: str) -> None:
        """Delete what dead runs left: half-loaded generations, and an earlier uncommitted
        attempt of this generation."""
        for g, info in self.space.generations().items():
            partial = info.get("state") != "ready" or g == self.generation
            if partial and g != self.before:
                n = self.space.delete(g)
                log.info(
                    "deleted partial generation %s of %s (%d keys)",
                    g,
                    prefix,
                    n,
                    extra={"event": "redis_clean", "generation": g},
                )

    def write(self, table: pa.Table) -> None:
        """Load the users of a ranked table (complete users, grouped)."""
        self.loader.write(table)

    def finish(self) -> tuple[RedisStaged, dict[str, Any]]:
        """Wait for every acknowledgement; mark the generation ready.

        Returns:
            The staged generation, and what the manifest records: ``url`` (password hidden),
            ``prefix``, ``generation``, ``keys``, ``bytes`` (values), ``key_bytes``, ``value``.
        """
        keys = self.loader.finish()
        report: dict[str, Any] = {
            "url": self.target.display,
            "prefix": self.space.prefix,
            "generation": self.generation,
            "keys": keys,
            "bytes": self.loader.value_bytes,
            "key_bytes": self.loader.key_bytes,
            "value": self.target.value,
        }
        if self.space.nodes.cluster:  # what each primary acknowledged; the sum is ``keys``
            report["nodes"] = self.loader.acked_by
        info = {k: report[k] for k in ("keys", "bytes", "value")}
        ready = {"state": "ready", "loaded_at": now(), **info}
        # the control connection sat idle through the load: a blip the writers survived
        self.space.retrying(
            "mark the generation ready", lambda: self.space.mark(self.generation, ready)
        )
        self._report = report
        return RedisStaged(self), report

    def discard(self) -> None:
        """Best effort: delete what was loaded (else the next run does), then disconnect."""
        try:
            self.loader.abort()  # its threads may still be sending
            self.space.lost()  # fresh connections: a lost node may be back, or replaced
            if self.generation != self.before:
                self.space.retrying(
                    "delete the partial generation", lambda: self.space.delete(self.generation)
                )
        except OutputError as e:
            log.info(
                "%s: partial generation %s left for the next run (%s)",
                self.where,
                self.generation,
                e,
            )
        finally:
            self.close()

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            self.loader.abort()
        self.space.close()
