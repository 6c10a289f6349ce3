"""Ray for one run: start or join it, a Ray Data context, quiet loggers, actor CPU shares."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["actor_cpus", "avoid_fsspec_http_race", "data_context", "start_ray"]

log = logging.getLogger("batchrank.score")

BLOCK_BYTES_PER_ROW = 100
"""About the bytes Ray counts for one read row (two ids and the file path), to size blocks."""


def avoid_fsspec_http_race() -> None:
    """Make a missing ``aiohttp`` fail cleanly in Ray's threaded path resolution.

    Ray Data resolves paths in threads and probes ``fsspec.implementations.http``; without
    ``aiohttp`` that import fails, and two threads importing it at once can see a partly
    initialised module and raise ``ImportError`` (not the ``ModuleNotFoundError`` Ray expects).
    Marking the module missing when it cannot be imported anyway gives every thread the clean
    error.
    """
    name = "fsspec.implementations.http"
    if name in sys.modules:
        return
    try:
        __import__(name)
    except ImportError:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def start_ray(address: str | None) -> bool:
    """Connect to (or start) Ray; True when this call started or connected it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "address": address,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False
    local = "include_dashboard" in kwargs
    log.info(
        "starting a local Ray instance" if local else "connecting to Ray",
        extra={"event": "ray_init", "address": address or os.environ.get("RAY_ADDRESS")},
    )
    # a local instance is private to this run: its token-auth notice is noise here
    quiet = ["ray._private.authentication.authentication_token_setup"] if local else []
    with quiet_loggers(quiet, logging.ERROR), warnings.catch_warnings():
        # Ray starts its processes with fork+exec; JAX warns about any fork
        warnings.filterwarnings(
            "ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning
        )
        ray.init(**kwargs)
    return True


@contextlib.contextmanager
def quiet_loggers(names: Sequence[str], level: int) -> Iterator[None]:
    """Raise the level of some loggers for the duration of the block."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(level, lg.getEffectiveLevel()))
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


@contextlib.contextmanager
def data_context(chunk_rows: int) -> Iterator[Any]:
    """A Ray Data context for this run: ordered, blocks of about ``chunk_rows`` rows, quiet.

    Each block read is scored as one batch (``batch_size=None``: a batch never mixes blocks of
    two reads, whose id types may differ), so the block size sets the unit of parallel work.
    """
    from ray.data import DataContext

    ctx = DataContext.get_current().copy()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.execution_options.preserve_order = True
    # Readers emit blocks once they pass target_min_block_size (1 MiB by default, some 15,000
    # rows here): far too small a unit of work. Aim for half to all of chunk_rows instead.
    target = max(1 << 20, chunk_rows * BLOCK_BYTES_PER_ROW)
    if ctx.target_max_block_size:
        target = min(ctx.target_max_block_size, target)
        ctx.target_max_block_size = target
    ctx.target_min_block_size = min(max(ctx.target_min_block_size or 0, target // 2), target)
    if hasattr(ctx, "use_datasource_v2"):
        # The V2 Parquet reader lists files again inside Ray tasks, from several threads; without
        # aiohttp those threads race on importing fsspec's HTTP module (see
        # avoid_fsspec_http_race) and a read fails now and then. V1 resolves paths once, here.
        ctx.use_datasource_v2 = False
    # "progress bars disabled" is what we asked for; execution start/finish lines are INFO; a
    # failed task is logged with its traceback before it is raised here, where run_ray reports it
    with (
        quiet_loggers(["ray.data._internal.progress"], logging.ERROR),
        quiet_loggers(
            [
                "ray.data._internal.execution.streaming_executor_state",
                "ray.data._internal.execution.operators.actor_pool_map_operator",
                "ray.data.exceptions",
            ],
            logging.CRITICAL,
        ),
        quiet_loggers(["ray.data"], logging.WARNING),
        DataContext.current(ctx),
    ):
        yield ctx


def actor_cpus(concurrency: int | None, cluster_cpus: float, nodes: int = 1) -> float | None:
    """CPUs each actor reserves, when a fixed pool would otherwise leave none for reading.

    Ray Data's read tasks need a whole CPU on one node; a fixed pool of one-CPU actors as large
    as the cluster would hold every CPU and wait forever for input. Such a pool shares all CPUs
    but one per node (``nodes``: the nodes with CPUs) between its actors: whatever the
    placement, the CPUs left free then add up to ``nodes``, so some node keeps a whole one
    (one CPU left over the whole cluster could be split into fractions across nodes). JAX
    still uses every core it sees: this is a reservation only. None: one CPU per actor.
    """
    if not concurrency or not cluster_cpus or concurrency <= cluster_cpus - 1:
        return None
    share = max(cluster_cpus - max(nodes, 1), 0.0) / concurrency
    log.info(
        "%d scoring actors on %g CPUs of %d node(s): each reserves %.2f CPU so that reads can run",
        concurrency,
        cluster_cpus,
        nodes,
        share,
        extra={"event": "ray_actor_cpus"},
    )
    return share
