"""Publishing top-k lists to Redis (or Valkey) with an atomic generation swap.

Key layout under a prefix (default ``batchrank:{job}:``):

- ``{prefix}{generation}:{user_id}``: the user's list (JSON; see :mod:`.values`);
- ``{prefix}current``: the generation readers resolve;
- ``{prefix}generations``: a hash, generation -> JSON state (loading / ready, keys, bytes);
- ``{prefix}history``: a sorted set of committed generations by the server's commit time.

A generation is staged (every key loaded, the acknowledged count checked), then committed by
one ``SET {prefix}current``; see :mod:`.generations`. A Redis Cluster is detected from the
URL's node and each key goes to the primary serving its hash slot; see :mod:`.cluster`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchrank.sinks.redis.target import RedisTarget, target_of

if TYPE_CHECKING:
    from batchrank.sinks.redis.admin import ping, rollback, status
    from batchrank.sinks.redis.generations import RedisSink

__all__ = ["RedisSink", "RedisTarget", "ping", "rollback", "status", "target_of"]


def __getattr__(name: str) -> Any:
    """The publisher itself (polars, pyarrow) is imported on first use, so reading a job file
    that names a target stays light."""
    if name == "RedisSink":
        from batchrank.sinks.redis.generations import RedisSink

        return RedisSink
    if name in ("ping", "rollback", "status"):
        from batchrank.sinks.redis import admin

        return getattr(admin, name)
    raise AttributeError(name)
