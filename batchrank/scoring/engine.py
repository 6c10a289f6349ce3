"""The local streaming engine: one process, chunk by chunk, I/O overlapped with compute.

A reader thread decodes and maps the next chunk while JAX computes the current one. Scored
chunks feed a streaming top-k state. With a work folder, each input fragment's partial top-k is
recorded once it is finished, so a re-run after a crash resumes instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.atomic import atomic_file
from batchrank.scoring.ids import MappedChunk, map_ids
from batchrank.scoring.predict import Predictor, TablePredictor
from batchrank.scoring.prepare import Prepared
from batchrank.scoring.progress import make_progress
from batchrank.scoring.topk import TopK, partial_schema

__all__ = ["Fragment", "Scored", "run_local", "score_mapped"]

log = logging.getLogger("batchrank.score")


@dataclass
class Scored:
    """What an engine hands to the commit step."""

    topk: TopK
    counts: Counter[str] = field(default_factory=Counter)
    fragments_resumed: int = 0
    fragments_total: int = 0


@dataclass(frozen=True)
class Fragment:
    """A unit of resumable work: one input file, or one block of users of ``--pairs all``."""

    key: str
    chunks: Any
    """A zero-argument callable returning the fragment's raw chunks."""
    work: Any
    """A callable mapping a raw chunk to its progress increment."""


def score_mapped(mapped: MappedChunk, predictor: Predictor | TablePredictor) -> pa.Table:
    """Predict a mapped chunk: ``user_id, movie_id, score, stars``."""
    t = mapped.table
    u = t.column("u").to_numpy()
    i = t.column("i").to_numpy()
    scores, stars = predictor.predict(u, i)
    return pa.table(
        {
            "user_id": t.column("user_id"),
            "movie_id": t.column("movie_id"),
            "score": pa.array(scores, pa.float32()),
            "stars": pa.array(stars, pa.float32()),
        }
    )


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


def _fragment_paths(work_dir: Path, key: str) -> tuple[Path, Path]:
    return work_dir / f"fragment-{key}.parquet", work_dir / f"fragment-{key}.json"


def run_local(prep: Prepared) -> Scored:
    """Score every fragment of a prepared run into a streaming top-k state."""
    spec = prep.spec
    predictor = prep.predictor()
    topk = prep.new_topk()
    result = Scored(topk=topk)
    fragments = prep.fragments()
    result.fragments_total = len(fragments)
    total, unit = prep.total_work()
    work_dir = spec.work_dir
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with make_progress(spec.progress, total, unit) as progress:
        for frag in fragments:
            if work_dir is not None:
                data_path, meta_path = _fragment_paths(work_dir, frag.key)
                if data_path.exists() and meta_path.exists():
                    meta = json.loads(meta_path.read_text())
                    topk.add(pq.read_table(data_path))
                    result.counts.update(meta["counts"])
                    result.fragments_resumed += 1
                    progress.advance(int(meta.get("work", 0)), int(meta["counts"].get("read", 0)))
                    log.info(
                        "resumed fragment %s from %s",
                        frag.key,
                        data_path,
                        extra={"event": "fragment_resumed", "counts": meta["counts"]},
                    )
                    continue
                local = TopK(spec.top_k, user_type=prep.user_type, item_type=prep.item_type)
            else:
                local = topk
            counts: Counter[str] = Counter()
            work_done = 0
            mapped_iter = _prefetch(
                (raw, map_ids(raw, prep.bundle.users, prep.bundle.items, unknown=spec.unknown))
                for raw in frag.chunks()
            )
            for raw, mapped in mapped_iter:
                counts.update(mapped.counts)
                if mapped.rejects is not None and mapped.rejects.num_rows:
                    prep.record_rejects(mapped.rejects)
                if mapped.table.num_rows:
                    local.add(score_mapped(mapped, predictor))
                w = frag.work(raw)
                work_done += w
                progress.advance(w, raw.table.num_rows)
            if work_dir is not None:
                partial = _collect(local)
                data_path, meta_path = _fragment_paths(work_dir, frag.key)
                with atomic_file(data_path) as tmp:
                    pq.write_table(partial, tmp)
                with atomic_file(meta_path) as tmp:
                    tmp.write_text(json.dumps({"counts": dict(counts), "work": work_done}))
                local.close()
                topk.add(partial)
            result.counts.update(counts)
    return result


def _collect(topk: TopK) -> pa.Table:
    """The full content of a (small, per-fragment) top-k state as one table."""
    tables = [t.select(["user_id", "movie_id", "score", "stars"]) for t in topk.results()]
    if not tables:
        return partial_schema(topk.user_type, topk.item_type).empty_table()
    return pa.concat_tables(tables)


def fragment_key(*parts: object) -> str:
    """A short stable key for a fragment from the things that define its partial result."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]
