"""Preparing a run: load the model, discover and validate every input, before any work."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from batchrank.bundle import Bundle, load_bundle
from batchrank.errors import DataError
from batchrank.scoring import reader
from batchrank.scoring.predict import (
    MAX_TABLE_CELLS,
    Predictor,
    TablePredictor,
    make_predictor,
)
from batchrank.scoring.rejects import RejectsWriter
from batchrank.scoring.spec import ScoreSpec
from batchrank.scoring.topk import TopK

__all__ = ["Prepared", "prepare"]

log = logging.getLogger("batchrank.score")

# With --pairs all, users are scored in blocks of this many pairs; each block is a fragment.
CROSS_JOIN_FRAGMENT_PAIRS = 4_000_000


@dataclass
class Prepared:
    """A validated run: the spec, the bundle, the inputs and the shared per-run resources."""

    spec: ScoreSpec
    bundle: Bundle
    files: list[reader.InputFile]
    cross_users: pa.Array | None
    titles: pa.Table | None
    run_id: str
    timings: dict[str, float] = field(default_factory=dict)
    _rejects: RejectsWriter | None = None

    @property
    def user_type(self) -> pa.DataType:
        """Arrow type of user ids (the vocabulary's kind)."""
        return pa.int64() if self.bundle.users.kind == "int" else pa.string()

    @property
    def item_type(self) -> pa.DataType:
        """Arrow type of movie ids (the vocabulary's kind)."""
        return pa.int64() if self.bundle.items.kind == "int" else pa.string()

    @cached_property
    def _predictor(self) -> Predictor | TablePredictor:
        inner = make_predictor(self.bundle, batch_size=self.spec.batch_size)
        if self.use_score_table():
            return TablePredictor(inner, (self.bundle.users.size, self.bundle.items.size))
        return inner

    def use_score_table(self) -> bool:
        """Score every cell once when the input has at least twice as many pairs as cells."""
        if self.spec.score_table == "never" or self.cross_users is not None:
            return False
        cells = self.bundle.users.size * self.bundle.items.size
        total, unit = reader.total_work(self.files)
        return unit == "rows" and cells <= MAX_TABLE_CELLS and total >= 2 * cells

    def predictor(self) -> Predictor | TablePredictor:
        """The jitted predictor, built once."""
        return self._predictor

    def boundaries(self, parts: int = 64) -> pa.Array:
        """User-range partition boundaries for spilling: quantiles of the user vocabulary."""
        ids = self.bundle.users.ids
        n = len(ids)
        if n <= parts:
            return ids
        pos = np.unique((np.arange(1, parts) * n) // parts)
        return ids.take(pa.array(pos))

    def new_topk(self) -> TopK:
        """The run's top-k state."""
        spill = self.spec.out.parent / f"{_spill_prefix(self.spec.out)}{self.run_id}"
        return TopK(
            self.spec.top_k,
            user_type=self.user_type,
            item_type=self.item_type,
            memory_budget_bytes=int(self.spec.memory_budget_mb * (1 << 20)),
            spill_dir=spill,
            boundaries=self.boundaries(),
        )

    def total_work(self) -> tuple[int | None, str]:
        """Total work for the progress bar, and its unit."""
        if self.cross_users is not None:
            return len(self.cross_users) * len(self.bundle.items), "rows"
        return reader.total_work(self.files)

    def fragments(self) -> list[Any]:
        """The run's resumable units of work, in order."""
        from batchrank.scoring.engine import Fragment, fragment_key

        spec = self.spec
        common = (self.bundle.fingerprint, spec.top_k, spec.unknown, spec.user_col, spec.item_col)
        if self.cross_users is not None:
            users = self.cross_users
            n_items = len(self.bundle.items)
            per_block = max(1, CROSS_JOIN_FRAGMENT_PAIRS // max(n_items, 1))
            out = []
            for start in range(0, len(users), per_block):
                block = users.slice(start, per_block)
                key = fragment_key("all", *common, start, len(block), block[0].as_py())
                out.append(
                    Fragment(
                        key=key,
                        chunks=_cross_chunks(self, block),
                        work=lambda raw: raw.table.num_rows,
                    )
                )
            return out
        out = []
        _, unit = reader.total_work(self.files)
        for idx, f in enumerate(self.files):
            key = fragment_key("file", *common, str(f.path.resolve()), f.size, f.mtime)
            out.append(
                Fragment(
                    key=key,
                    chunks=_file_chunks(self, idx),
                    work=_work_fn(f, unit),
                )
            )
        return out

    def record_rejects(self, rejects: pa.Table) -> None:
        """Send rejected rows to ``--rejects`` when given."""
        if self.spec.rejects is None:
            return
        if self._rejects is None:
            self._rejects = RejectsWriter(self.spec.rejects)
        self._rejects.write(rejects)

    def finish_rejects(self) -> Any:
        """The staged rejects file (an empty one when none were rejected), or None."""
        if self.spec.rejects is None:
            return None
        if self._rejects is None:
            self._rejects = RejectsWriter(self.spec.rejects)
        rejects, self._rejects = self._rejects, None
        return rejects.finish()

    def close_rejects(self, commit: bool) -> None:
        """Commit (or drop) the rejects file; an empty one is written on success when asked."""
        if self.spec.rejects is None:
            return
        if self._rejects is None:
            if not commit:
                return
            self._rejects = RejectsWriter(self.spec.rejects)
        self._rejects.close(commit=commit)
        self._rejects = None


def _spill_prefix(out: Path) -> str:
    # Not matched by atomic.clean_leftovers(out), which the writer calls while spill is live.
    return f".{out.name}.batchrank-spill-"


def _clean_spill_leftovers(out: Path) -> None:
    """Remove spill folders of earlier killed runs (their files are anonymous; folders remain)."""
    import shutil

    if out.parent.is_dir():
        for p in out.parent.glob(f"{_spill_prefix(out)}*"):
            shutil.rmtree(p, ignore_errors=True)


def _file_chunks(prep: Prepared, idx: int) -> Callable[[], Iterator[reader.RawChunk]]:
    def gen() -> Iterator[reader.RawChunk]:
        for chunk in reader.iter_chunks(
            [prep.files[idx]],
            user_col=prep.spec.user_col,
            item_col=prep.spec.item_col,
            chunk_rows=prep.spec.chunk_rows,
        ):
            chunk.file_index = idx
            yield chunk

    return gen


def _work_fn(f: reader.InputFile, unit: reader.WorkUnit) -> Callable[[reader.RawChunk], int]:
    return lambda raw: reader.chunk_work(raw, f, unit)


def _cross_chunks(prep: Prepared, users: pa.Array) -> Callable[[], Iterator[reader.RawChunk]]:
    items = prep.bundle.items
    user_index = prep.bundle.users.lookup(users)
    item_index = np.arange(1, len(items) + 1, dtype=np.int32)
    return lambda: reader.iter_cross_join(
        users,
        len(items),
        items.ids,
        chunk_rows=prep.spec.chunk_rows,
        user_index=user_index,
        item_index=item_index,
    )


def _load_titles(spec: ScoreSpec, bundle: Bundle) -> pa.Table | None:
    if spec.items is None:
        if bundle.titles is None:
            return None
        return pa.table({"movie_id": bundle.items.ids, "title": bundle.titles})
    from batchrank.sources import Columns, load_items

    return load_items(spec.items, Columns(item=spec.item_col, title=spec.title_col))


def prepare(spec: ScoreSpec) -> Prepared:
    """Load and check everything a run needs; raise before any scoring work on bad input."""
    import time

    t0 = time.perf_counter()
    bundle = load_bundle(spec.model, model=False)
    _clean_spill_leftovers(spec.out)
    t1 = time.perf_counter()
    files: list[reader.InputFile] = []
    cross_users = None
    if spec.is_cross_join:
        if spec.users is not None:
            raw = reader.read_user_subset(spec.users, spec.user_col)
            cross_users = _known_users(raw, bundle, spec)
        else:
            cross_users = bundle.users.ids
    else:
        files = reader.discover_inputs(spec.pairs)
        reader.validate_inputs(files, user_col=spec.user_col, item_col=spec.item_col)
    titles = _load_titles(spec, bundle)
    prep = Prepared(
        spec=spec,
        bundle=bundle,
        files=files,
        cross_users=cross_users,
        titles=titles,
        run_id=spec.run_id or uuid.uuid4().hex[:12],
    )
    prep.timings["load_model_s"] = t1 - t0
    prep.timings["prepare_s"] = time.perf_counter() - t0
    return prep


def _known_users(raw: pa.Array, bundle: Bundle, spec: ScoreSpec) -> pa.Array:
    """The --users subset, as known ids of the vocabulary's kind, sorted and unique."""
    import pyarrow.compute as pc

    from batchrank.vocab import coerce_ids

    where = f"{spec.users}: column `{spec.user_col}`"
    ids, bad = coerce_ids(raw, bundle.users.kind, where=where)
    if bad.any() or ids.null_count:
        row = int(np.argmax(bad | ~np.asarray(pc.is_valid(ids).to_numpy(zero_copy_only=False))))
        raise DataError(f"{where}: row {row + 1} is not a valid user id ({raw[row].as_py()!r})")
    idx = bundle.users.lookup(ids)
    unknown = idx == 0
    if unknown.any():
        first = ids[int(np.argmax(unknown))].as_py()
        if spec.unknown == "fail":
            raise DataError(
                f"{where}: unknown user id {first!r} (not in the model; --unknown fail)"
            )
        log.warning(
            "%s: %d users are not in the model and are skipped (first: %r)",
            spec.users,
            int(unknown.sum()),
            first,
            extra={"event": "unknown_users", "counts": {"unknown_user": int(unknown.sum())}},
        )
    known = np.unique(idx[~unknown])
    return bundle.users.id_at(known)
