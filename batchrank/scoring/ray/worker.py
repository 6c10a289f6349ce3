"""The Ray actor: the local engine's per-chunk stage on every batch, results and errors as data.

:class:`Scorer` is a Ray Data callable class. It loads the bundle once (on its first batch, so
that a bundle it cannot load comes back as data, not as a dead actor), builds its
:class:`~batchrank.scoring.stage.StageContext`, and runs
:func:`~batchrank.scoring.stage.score_chunk` on each slice of a batch. Each output batch is the
batch's partial top-k (at most k rows per user) followed by one *marker row* whose ``_meta``
column holds the batch's counts, its file segments and any error as JSON (a batchrank error by
its class and fields, any other exception with its traceback: no exception of ours ever
crosses Ray), and whose ``_rejects`` column holds its rejected rows as an Arrow IPC stream.
"""

from __future__ import annotations

import io
import json
import os
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.errors import BatchrankError, DataError, ModelError
from batchrank.fs import is_remote, local_or_remote
from batchrank.scoring.schema import MOVIE_ID, SCORE, STARS, USER_ID, partial_schema

__all__ = ["Scorer", "WorkerConfig", "bucket_of", "merge_group", "output_schema"]

PATH = "path"
"""The column Ray's readers add with ``include_paths=True``."""
META = "_meta"
REJECTS = "_rejects"
BUCKET = "_bucket"
SEG = "_seg"
BLOCK = "block"
META_BUCKET = -1


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a scoring actor needs; small and picklable."""

    model: str
    fingerprint: str
    batch_size: int
    top_k: int
    unknown: str
    user_col: str
    item_col: str
    files: tuple[str, ...]
    """The input files, as named in rejects and messages and as given to Ray's readers."""
    chunk_rows: int
    buckets: int
    cross_users: pa.Array | None
    """``--pairs all --users``: the users to score (None: every user of the bundle)."""
    users_per_block: int
    fractional_gpu: bool
    score_table: bool
    """Score every (user, movie) cell once per actor, then gather (the driver's choice)."""
    rules: Any = None
    """The run's :class:`~batchrank.scoring.rules.Rules` (pickled; None when none)."""
    precision: str = "float32"
    """``--precision``."""
    storage: Any = None
    """The driver's object-store settings and keys (a
    :class:`~batchrank.scoring.ray.storage.WorkerStorage`; None: this process's own)."""


def output_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    """A partial top-k plus the bucket and the marker row's columns."""
    extra = [
        pa.field(BUCKET, pa.int32()),
        pa.field(META, pa.binary()),
        pa.field(REJECTS, pa.binary()),
    ]
    return pa.schema([*partial_schema(user_type, item_type), *extra])


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def ipc_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(io.BytesIO(data)).read_all()


def error_data(e: BatchrankError, seg: int) -> dict[str, Any]:
    """A batchrank error as JSON-able fields (``seg``: the batch segment it names, or -1)."""
    fields = {k: getattr(e, k, None) for k in ("file", "row", "detail")}
    return {"type": type(e).__name__, "message": str(e), "seg": seg, **fields}


class Scorer:
    """A Ray Data callable class: scores batches into partial top-ks with the shared stage."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.stage: Any = None
        self.bundle: Any = None
        # the values of the ``path`` column, which Ray may have normalised
        self.file_of = {p: i for i, p in enumerate(config.files)}
        for i, p in enumerate(config.files):
            self.file_of.setdefault(os.path.normpath(p), i)

    def _setup(self) -> None:
        """Load the bundle and build the stage, once.

        Raises:
            ModelError: the bundle is missing on this worker or differs from the driver's.
        """
        cfg = self.config
        if cfg.fractional_gpu:
            # several actors share a GPU: JAX must not grab most of its memory up front
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        from batchrank.bundle import load_bundle
        from batchrank.scoring.ray.session import avoid_fsspec_http_race
        from batchrank.scoring.stage import stage_context

        avoid_fsspec_http_race()
        if cfg.storage is not None:
            cfg.storage.apply()  # before the first URI is opened here
        model = local_or_remote(Path(cfg.model))  # a URI: this worker fetches it
        if not is_remote(model) and not model.exists():
            raise ModelError(
                f"{model}: model bundle not found on a Ray worker; on a cluster the bundle must "
                "be on storage every node can read"
            )
        # the arrays only (weights.npz), as the local scorer: no Keras import in the actor
        bundle = load_bundle(model, model=False)
        if bundle.fingerprint != cfg.fingerprint:
            raise ModelError(
                f"{model}: the bundle a Ray worker loaded differs from the driver's "
                f"(fingerprint {bundle.fingerprint}, expected {cfg.fingerprint})"
            )
        self.bundle = bundle
        self.stage = stage_context(
            bundle,
            top_k=cfg.top_k,
            unknown=cfg.unknown,  # type: ignore[arg-type]
            batch_size=cfg.batch_size,
            score_table=cfg.score_table,
            rules=cfg.rules,
            precision=cfg.precision,
        )
        self.schema = output_schema(self.stage.user_type, self.stage.item_type)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Score one batch of file rows (or blocks of ``--pairs all`` users)."""
        try:
            if self.stage is None:
                self._setup()
            if BLOCK in batch.column_names:
                return self._cross(batch)
            return self._files(batch)
        except BatchrankError as e:
            return self._marker(_Batch(), [], error=error_data(e, -1))
        except Exception as e:
            # a bug: sent back as data too, so that every exception Ray raises is Ray's own
            bug = {"type": "bug", "message": f"{type(e).__name__}: {e}", "seg": -1}
            return self._marker(_Batch(), [], error={**bug, "traceback": traceback.format_exc()})

    def _file_index(self, path: str) -> int:
        for name in (path, os.path.normpath(path), os.path.normpath("/" + path.lstrip("/"))):
            idx = self.file_of.get(name)
            if idx is not None:
                return idx
        bare = path.split("://", 1)[-1].lstrip("/")  # Ray names objects bucket/key
        for key, idx in self.file_of.items():
            if "://" in key and key.split("://", 1)[1] == bare:
                return idx
        raise RuntimeError(f"Ray read a file batchrank did not ask for: {path!r}")

    def _segments(self, paths: pa.ChunkedArray | pa.Array) -> list[tuple[int, int, int]]:
        """``(file_index, start, length)`` of the runs of rows from one file, in order."""
        if isinstance(paths, pa.ChunkedArray):
            paths = paths.combine_chunks()
        n = len(paths)
        if n == 0:
            return []
        encoded = pc.dictionary_encode(paths)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        names = encoded.dictionary.to_pylist()
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ends = np.r_[starts[1:], n]
        return [
            (self._file_index(names[codes[s]]), int(s), int(e - s))
            for s, e in zip(starts, ends, strict=True)
        ]

    def _files(self, batch: pa.Table) -> pa.Table:
        """One block of file rows: the stage on each slice of each file's run of rows."""
        from batchrank.scoring.reader import ITEM, USER, RawChunk
        from batchrank.scoring.stage import score_chunk

        cfg = self.config
        acc = _Batch()
        segments: list[list[int]] = []
        for seg, (fi, start, n) in enumerate(self._segments(batch.column(PATH))):
            segments.append([fi, n])
            for off in range(0, n, cfg.chunk_rows):
                part = batch.slice(start + off, min(cfg.chunk_rows, n - off))
                raw = RawChunk(
                    table=pa.table(
                        {USER: part.column(cfg.user_col), ITEM: part.column(cfg.item_col)}
                    ),
                    file_index=fi,
                    path=Path(cfg.files[fi]),
                    # rows count from the segment's start; the driver adds the rows before it
                    first_row=1 + off,
                    source_columns=(cfg.user_col, cfg.item_col),
                )
                try:
                    acc.add(score_chunk(raw, self.stage), seg)
                except DataError as e:
                    return self._marker(acc, segments, error=error_data(e, seg))
        return self._marker(acc, segments)

    def _cross(self, batch: pa.Table) -> pa.Table:
        """Blocks of ``--pairs all`` users: generate their pairs chunk by chunk and score them."""
        from batchrank.scoring.cross import iter_cross_join
        from batchrank.scoring.stage import score_chunk

        cfg = self.config
        users_all = cfg.cross_users if cfg.cross_users is not None else self.bundle.users.ids
        items = self.bundle.items
        acc = _Batch()
        for block in batch.column(BLOCK).to_pylist():
            users = users_all.slice(int(block) * cfg.users_per_block, cfg.users_per_block)
            for raw in iter_cross_join(users, len(items), items.ids, chunk_rows=cfg.chunk_rows):
                try:
                    acc.add(score_chunk(raw, self.stage), -1)
                except DataError as e:
                    return self._marker(acc, [], error=error_data(e, -1))
        return self._marker(acc, [])

    def _rows(self, partial: pa.Table) -> pa.Table:
        """A partial top-k in the output schema, with each user's bucket."""
        n = partial.num_rows
        buckets = self.config.buckets
        if buckets > 0 and n:
            bucket = bucket_of(partial.column(USER_ID), buckets)
        else:
            bucket = pa.array(np.zeros(n, np.int32))
        columns = [partial.column(c) for c in (USER_ID, MOVIE_ID, SCORE, STARS)]
        nulls = pa.nulls(n, pa.binary())
        return pa.Table.from_arrays([*columns, bucket, nulls, nulls], schema=self.schema)

    def _marker(
        self, acc: _Batch, segments: list[list[int]], *, error: dict[str, Any] | None = None
    ) -> pa.Table:
        schema = getattr(self, "schema", None) or output_schema(pa.int64(), pa.int64())
        meta = {"counts": dict(acc.counts), "segments": segments, "error": error, "node": _node()}
        rejects = acc.rejects() if error is None else None
        marker = pa.table(
            {
                USER_ID: pa.nulls(1, schema.field(USER_ID).type),
                MOVIE_ID: pa.nulls(1, schema.field(MOVIE_ID).type),
                SCORE: pa.nulls(1, pa.float32()),
                STARS: pa.nulls(1, pa.float32()),
                BUCKET: pa.array([META_BUCKET], pa.int32()),
                META: pa.array([json.dumps(meta).encode()], pa.binary()),
                REJECTS: pa.array([ipc_bytes(rejects) if rejects else None], pa.binary()),
            },
            schema=schema,
        )
        partial = acc.partial(self.stage) if error is None else None
        if partial is None or partial.num_rows == 0:
            return marker
        return pa.concat_tables([self._rows(partial), marker])


def _node() -> str | None:
    """The id of the Ray node this actor runs on (None outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


class _Batch:
    """One batch's chunk results: counts, rejects tagged with their segment, partials."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.partials: list[pa.Table] = []
        self.reject_tables: list[pa.Table] = []

    def add(self, chunk: Any, seg: int) -> None:
        self.counts.update(chunk.counts)
        r = chunk.rejects
        if r is not None:
            self.reject_tables.append(
                r.append_column(SEG, pa.array(np.full(r.num_rows, seg, np.int32)))
            )
        if chunk.partial.num_rows:
            self.partials.append(chunk.partial)

    def rejects(self) -> pa.Table | None:
        return pa.concat_tables(self.reject_tables) if self.reject_tables else None

    def partial(self, stage: Any) -> pa.Table | None:
        """The batch's partial top-k (None when nothing was kept)."""
        from batchrank.scoring.ranking import merge_partials

        if not self.partials:
            return None
        if len(self.partials) == 1:
            return self.partials[0]
        return merge_partials(
            self.partials, stage.top_k, user_type=stage.user_type, item_type=stage.item_type
        )


def bucket_of(users: pa.ChunkedArray | pa.Array, buckets: int) -> pa.Array:
    """A stable bucket in ``[0, buckets)`` per user id (integer ids: modulo; text: a hash)."""
    import polars as pl

    series = pl.from_arrow(pa.table({"u": users}))["u"]  # type: ignore[index]
    if series.dtype.is_integer():
        out = (series % buckets).cast(pl.Int32)
    else:
        out = (series.hash(seed=0) % buckets).cast(pl.Int32)
    return out.to_arrow()


def merge_group(group: pa.Table, k: int) -> pa.Table:
    """``map_groups`` function: the exact top-k of one bucket (marker rows pass through)."""
    from batchrank.scoring.ranking import partial_topk

    bucket = group.column(BUCKET)
    if group.num_rows == 0 or bucket[0].as_py() == META_BUCKET:
        return group
    merged = partial_topk(group, k)
    n = merged.num_rows
    columns = [merged.column(c) for c in (USER_ID, MOVIE_ID, SCORE, STARS)]
    nulls = pa.nulls(n, pa.binary())
    filled = pa.array(np.full(n, bucket[0].as_py(), np.int32))
    return pa.Table.from_arrays([*columns, filled, nulls, nulls], schema=group.schema)
