"""``batchrank publish``'s operations on a prefix's generations: ping, rollback, status
(on a single server or a Redis Cluster: each command goes to the node serving its key)."""

from __future__ import annotations

from typing import Any

from batchrank.errors import OutputError
from batchrank.sinks.redis.cluster import Addr, Nodes
from batchrank.sinks.redis.generations import Keyspace, now
from batchrank.sinks.redis.protocol import LinkError, with_retries
from batchrank.sinks.redis.target import RedisTarget

__all__ = ["ping", "rollback", "status"]


def ping(target: RedisTarget) -> None:
    """Connect, authenticate and select the database (retried), on every primary of a
    cluster: fail before any work."""
    nodes = Nodes(target)
    try:
        for addr in nodes.primaries():

            def attempt(addr: Addr = addr) -> None:
                try:
                    nodes.connection(addr).call("PING")
                except LinkError:
                    nodes.drop(addr)
                    raise

            with_retries(nodes.node_target(addr), "connect", attempt)
    finally:
        nodes.close()


def rollback(target: RedisTarget, prefix: str, to: str | None = None) -> tuple[str | None, str]:
    """Point ``{prefix}current`` at the committed generation before the current one (or ``to``).

    Returns:
        The generation it named before, and the one it names now.

    Raises:
        OutputError: no earlier generation is kept, or ``to`` is not a ready generation.
    """
    space = Keyspace(target, prefix)
    try:
        current = space.current()
        ready = {g for g, i in space.generations().items() if i.get("state") == "ready"}
        if to is None:
            history = [g for g in space.history() if g in ready]
            older = history[history.index(current) + 1 :] if current in history else history[1:]
            if not older:
                raise OutputError(
                    f"{target.display} {prefix}: no generation before {current or 'none'} is "
                    f"kept to roll back to (kept: {', '.join(history) or 'none'})"
                )
            to = older[0]
        elif to not in ready:
            raise OutputError(
                f"{target.display} {prefix}: generation {to!r} is not a loaded generation "
                f"(ready: {', '.join(sorted(ready)) or 'none'})"
            )
        space.point(to)
        # The rolled-back generation drops out of the history so a second rollback goes further.
        if current is not None and current != to:
            space.call(space.history_key, "ZREM", space.history_key, current)
            info = space.generations().get(current, {})
            space.mark(current, {**info, "state": "rolled-back", "rolled_back_at": now()})
        return current, to
    finally:
        space.close()


def status(target: RedisTarget, prefix: str) -> dict[str, Any]:
    """``current``, the committed history (newest first) and every generation's record."""
    space = Keyspace(target, prefix)
    try:
        out = {
            "url": target.display,
            "prefix": prefix,
            "current": space.current(),
            "history": space.history(),
            "generations": space.generations(),
        }
        if space.nodes.cluster:
            out["cluster_primaries"] = [f"{h}:{p}" for h, p in space.nodes.primaries()]
        return out
    finally:
        space.close()
