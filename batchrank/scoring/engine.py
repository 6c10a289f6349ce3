"""The local streaming engine: one process, chunk by chunk, I/O overlapped with compute.

A reader thread decodes and maps the next chunk (:func:`batchrank.scoring.stage.map_chunk`)
while JAX computes the current one (:func:`~batchrank.scoring.stage.finish_chunk`); each
chunk's partial top-k feeds the run's streaming top-k state. Rejected rows are spooled per
fragment and handed to the commit step as files. With a work folder, each fragment's partial,
rejects and counts are recorded once it is finished (:mod:`batchrank.scoring.workdir`), so a
re-run after a crash resumes instead of starting over.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchrank.scoring.context import Fragment, RunContext, fragment_chunks, fragment_work, new_topk
from batchrank.scoring.progress import make_progress
from batchrank.scoring.schema import PARTIAL_COLUMNS, partial_schema
from batchrank.scoring.stage import (
    ChunkResult,
    StageContext,
    map_chunk,
    predict_chunk,
    rank_chunk,
    stage_for_run,
)
from batchrank.scoring.topk import TopK
from batchrank.scoring.workdir import FragmentStore, RejectsPart

__all__ = ["Scored", "rejects_spool", "run_local"]

log = logging.getLogger("batchrank.score")


@dataclass
class Scored:
    """What an engine hands to the commit step."""

    topk: TopK
    counts: Counter[str] = field(default_factory=Counter)
    fragments_resumed: int = 0
    fragments_total: int = 0
    rejects: list[Path] = field(default_factory=list)
    """Spooled rejects (Arrow IPC streams), in the order the rejects file lists them."""
    device: str | None = None
    predictor: str | None = None


def rejects_spool(ctx: RunContext) -> Path:
    """Scratch folder for a run's rejects without a work folder (removed after the commit)."""
    return ctx.spill_dir.with_name(ctx.spill_dir.name + "-rejects")


_DONE = object()


def _prefetch(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``it`` in a thread, ``depth`` items ahead; re-raise its errors here."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
            q.put(_DONE)
        except BaseException as e:  # handed to the consumer
            q.put(e)

    t = threading.Thread(target=worker, name="batchrank-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)


def run_local(ctx: RunContext) -> Scored:
    """Score every fragment of a prepared run into a streaming top-k state."""
    spec = ctx.spec
    stage = stage_for_run(ctx)
    topk = new_topk(ctx)
    result = Scored(
        topk=topk,
        fragments_total=len(ctx.fragments),
        device=stage.predictor.device,
        predictor=stage.predictor.path,
    )
    store = FragmentStore(spec.work_dir) if spec.work_dir is not None else None
    try:
        with make_progress(spec.progress, ctx.total_work, ctx.work_unit) as progress:
            for frag in ctx.fragments:
                if store is not None and _resume(store, frag, result, progress):
                    continue
                _run_fragment(ctx, stage, frag, store, result, progress)
    except BaseException:
        topk.close()
        raise
    return result


def _resume(store: FragmentStore, frag: Fragment, result: Scored, progress: Any) -> bool:
    done = store.load(frag.key)
    if done is None:
        return False
    result.topk.add(done.partial)
    result.counts.update(done.counts)
    result.rejects.append(done.rejects)
    result.fragments_resumed += 1
    progress.advance(done.work, done.counts.get("read", 0))
    log.info(
        "resumed fragment %s from %s",
        frag.key,
        store.folder,
        extra={"event": "fragment_resumed", "counts": done.counts},
    )
    return True


def _run_fragment(
    ctx: RunContext,
    stage: StageContext,
    frag: Fragment,
    store: FragmentStore | None,
    result: Scored,
    progress: Any,
) -> None:
    """Score one fragment; record it in the work folder, or spool its rejects."""
    spec = ctx.spec
    if store is not None:
        rejects = store.rejects_part(frag.key)
        local = TopK(spec.top_k, user_type=ctx.user_type, item_type=ctx.item_type)
    else:
        rejects = RejectsPart(rejects_spool(ctx) / f"rejects-{frag.index:08d}.arrow")
        local = result.topk
    keep_rejects = store is not None or spec.rejects is not None
    counts: Counter[str] = Counter()
    work_done = 0

    def take(raw: Any, chunk: ChunkResult) -> None:
        nonlocal work_done
        counts.update(chunk.counts)
        if keep_rejects:
            rejects.write(chunk.rejects)
        if chunk.partial.num_rows:
            local.add(chunk.partial)
        w = fragment_work(ctx, frag, raw)
        work_done += w
        progress.advance(w, raw.table.num_rows)

    try:
        mapped_iter = _prefetch((raw, map_chunk(raw, stage)) for raw in fragment_chunks(ctx, frag))
        # Chunk N+1's batches are queued on the device before chunk N is ranked, so the
        # partial top-k runs while JAX computes; chunks still reach the state in order.
        pending = None
        for raw, mapped in mapped_iter:
            queued = (raw, predict_chunk(mapped, stage))
            if pending is not None:
                take(pending[0], rank_chunk(pending[1], stage))
            pending = queued
        if pending is not None:
            take(pending[0], rank_chunk(pending[1], stage))
        if store is not None:
            partial = _collect(local)
            local.close()
            result.rejects.append(store.save(frag.key, partial, rejects, dict(counts), work_done))
            result.topk.add(partial)
        else:
            path = rejects.commit()
            if path is not None:
                result.rejects.append(path)
    except BaseException:
        rejects.discard()
        raise
    result.counts.update(counts)


def _collect(topk: TopK) -> pa.Table:
    """The full content of a (small, per-fragment) top-k state as one table."""
    tables = [t.select(list(PARTIAL_COLUMNS)) for t in topk.results()]
    if not tables:
        return partial_schema(topk.user_type, topk.item_type).empty_table()
    return pa.concat_tables(tables)
