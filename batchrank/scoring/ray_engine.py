"""The Ray Data engine: the local engine's stages inside a pool of Ray actors.

Inputs are read with Ray Data's Parquet and CSV readers: one read per group of files whose id
columns have the same types, ``path`` included so every row is traced to its file. Each block
(about ``chunk_rows`` rows) is one batch, so a batch never mixes two reads. A pool of
:class:`_Scorer` actors, each loading the bundle once, runs the local engine's stages on every
batch: ``ids.map_ids``, ``engine.score_mapped`` (the jitted predict and the rescale) and
``topk.partial_topk``. Each output batch is the batch's partial top-k (at most k rows per user)
followed by one *marker row* whose ``_meta`` column holds the batch's counts, its file segments
and any data error as JSON, and whose ``_rejects`` column holds its rejected rows as an Arrow
IPC stream.

The driver combines the partials into the run's :class:`~batchrank.scoring.topk.TopK` state as
they stream in (``combine="driver"``, the default), or first merges them on Ray by hashing
users into a bounded number of buckets (``combine="buckets"``, ``groupby(bucket).map_groups``);
the README's Ray section has the measurement that made the driver merge the default.
Execution keeps the input order (``preserve_order``), so the driver knows how many rows of each
file came before a
batch: reject rows, and the row named by ``--unknown fail``, carry exact file row numbers, and
the rejects file is written in the local engine's order.

``--pairs all`` is generated on Ray: ``ray.data.range`` over blocks of users, each actor
generating its block's pairs chunk by chunk; a block's users belong to no other block, so its
partial is final.

Failure handling: Ray Data's actor-pool defaults apply: an actor that dies (a crashed worker,
a lost node) is restarted (``max_restarts=-1``) and its batch retried (``max_task_retries=-1``,
without bound). Counts stay exact under retries: only the outputs of completed tasks reach the
driver. An exception raised by our code is not retried and fails the run; :func:`run_ray`
raises before anything is committed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrank import errors
from batchrank.errors import BatchrankError, ConfigError, DataError, ModelError, first_line
from batchrank.scoring.prepare import CROSS_JOIN_FRAGMENT_PAIRS, Prepared
from batchrank.scoring.topk import partial_schema

if TYPE_CHECKING:
    from batchrank.scoring.engine import Scored
    from batchrank.scoring.ids import MappedChunk
    from batchrank.scoring.reader import InputFile

__all__ = ["Combine", "run_ray"]

log = logging.getLogger("batchrank.score")

Combine = Literal["driver", "buckets"]

DEFAULT_BUCKETS = 64
"""Groups of users for ``combine="buckets"``."""

_PATH = "path"
"""The column Ray's readers add with ``include_paths=True``."""
_META = "_meta"
_REJECTS = "_rejects"
_BUCKET = "_bucket"
_SEG = "_seg"
_BLOCK = "block"
_META_BUCKET = -1
_BLOCK_BYTES_PER_ROW = 100
"""About the bytes Ray counts for one read row (two ids and the file path), to size blocks."""


# ---------------------------------------------------------------------------------------------
# what the actors need


@dataclass(frozen=True)
class _WorkerConfig:
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


def _output_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    """A partial top-k plus the bucket and the marker row's columns."""
    extra = [
        pa.field(_BUCKET, pa.int32()),
        pa.field(_META, pa.binary()),
        pa.field(_REJECTS, pa.binary()),
    ]
    return pa.schema([*partial_schema(user_type, item_type), *extra])


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _ipc_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(io.BytesIO(data)).read_all()


def _avoid_fsspec_http_race() -> None:
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


class _Scorer:
    """A Ray Data callable class: loads the bundle once, scores batches into partial top-ks."""

    def __init__(self, config: _WorkerConfig) -> None:
        """Load the bundle and build the jitted predictor.

        Raises:
            ModelError: the bundle is missing on this worker or differs from the driver's.
        """
        if config.fractional_gpu:
            # several actors share a GPU: JAX must not grab most of its memory up front
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        _avoid_fsspec_http_race()
        from batchrank.bundle import load_bundle
        from batchrank.scoring.predict import TablePredictor, make_predictor

        model = Path(config.model)
        if not model.exists():
            raise ModelError(
                f"{model}: model bundle not found on a Ray worker; on a cluster the bundle must "
                "be on storage every node can read"
            )
        # the arrays only (weights.npz), as the local scorer: no Keras import in the actor
        self.bundle = load_bundle(model, model=False)
        if self.bundle.fingerprint != config.fingerprint:
            raise ModelError(
                f"{model}: the bundle a Ray worker loaded differs from the driver's "
                f"(fingerprint {self.bundle.fingerprint}, expected {config.fingerprint})"
            )
        self.config = config
        predictor = make_predictor(self.bundle, batch_size=config.batch_size)
        self.predictor: Any = (
            TablePredictor(predictor, (self.bundle.users.size, self.bundle.items.size))
            if config.score_table
            else predictor
        )
        self.user_type = pa.int64() if self.bundle.users.kind == "int" else pa.string()
        self.item_type = pa.int64() if self.bundle.items.kind == "int" else pa.string()
        self.schema = _output_schema(self.user_type, self.item_type)
        # the values of the ``path`` column, which Ray may have normalised
        self.file_of = {p: i for i, p in enumerate(config.files)}
        for i, p in enumerate(config.files):
            self.file_of.setdefault(os.path.normpath(p), i)

    # -- one batch -----------------------------------------------------------------------------

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Score one batch of file rows (or one block of ``--pairs all`` users)."""
        if _BLOCK in batch.column_names:
            return self._cross(batch)
        return self._files(batch)

    def _file_index(self, path: str) -> int:
        idx = self.file_of.get(path)
        if idx is None:
            idx = self.file_of.get(os.path.normpath(path))
        if idx is None:
            idx = self.file_of.get(os.path.normpath("/" + path.lstrip("/")))
        if idx is None:
            raise RuntimeError(f"Ray read a file batchrank did not ask for: {path!r}")
        return idx

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
        """One block of file rows: map ids slice by slice, predict, keep a partial top-k."""
        from batchrank.scoring.ids import map_ids
        from batchrank.scoring.reader import ITEM, USER, RawChunk

        cfg = self.config
        acc = _Partials(self)
        segments: list[list[int]] = []
        for seg, (fi, start, n) in enumerate(self._segments(batch.column(_PATH))):
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
                    mapped = map_ids(raw, self.bundle.users, self.bundle.items, unknown=cfg.unknown)  # type: ignore[arg-type]
                except DataError as e:
                    error = {"seg": seg, "message": str(e)}
                    return self._marker(acc.counts, segments, None, error=error)
                acc.add(mapped, seg)
        return self._marker(acc.counts, segments, acc.rejects(), partial=acc.result())

    def _cross(self, batch: pa.Table) -> pa.Table:
        """Blocks of ``--pairs all`` users: generate their pairs chunk by chunk and score them."""
        from batchrank.scoring.ids import map_ids
        from batchrank.scoring.reader import iter_cross_join

        cfg = self.config
        users_all = cfg.cross_users if cfg.cross_users is not None else self.bundle.users.ids
        items = self.bundle.items
        acc = _Partials(self)
        for block in batch.column(_BLOCK).to_pylist():
            users = users_all.slice(int(block) * cfg.users_per_block, cfg.users_per_block)
            for raw in iter_cross_join(users, len(items), items.ids, chunk_rows=cfg.chunk_rows):
                try:
                    mapped = map_ids(raw, self.bundle.users, items, unknown=cfg.unknown)  # type: ignore[arg-type]
                except DataError as e:
                    return self._marker(acc.counts, [], None, error={"seg": -1, "message": str(e)})
                acc.add(mapped, -1)
        return self._marker(acc.counts, [], None, partial=acc.result())

    def _with_bucket(self, partial: pa.Table) -> pa.Table:
        n = partial.num_rows
        buckets = self.config.buckets
        if buckets > 0 and n:
            bucket = _bucket_of(partial.column("user_id"), buckets)
        else:
            bucket = pa.array(np.zeros(n, np.int32))
        return pa.table(
            {
                "user_id": partial.column("user_id").cast(self.user_type),
                "movie_id": partial.column("movie_id").cast(self.item_type),
                "score": partial.column("score"),
                "stars": partial.column("stars"),
                _BUCKET: bucket,
                _META: pa.nulls(n, pa.binary()),
                _REJECTS: pa.nulls(n, pa.binary()),
            },
            schema=self.schema,
        )

    def _marker(
        self,
        counts: Counter[str],
        segments: list[list[int]],
        rejects: pa.Table | None,
        *,
        partial: pa.Table | None = None,
        error: dict[str, Any] | None = None,
    ) -> pa.Table:
        meta = {"counts": dict(counts), "segments": segments, "error": error}
        marker = pa.table(
            {
                "user_id": pa.nulls(1, self.user_type),
                "movie_id": pa.nulls(1, self.item_type),
                "score": pa.nulls(1, pa.float32()),
                "stars": pa.nulls(1, pa.float32()),
                _BUCKET: pa.array([_META_BUCKET], pa.int32()),
                _META: pa.array([json.dumps(meta).encode()], pa.binary()),
                _REJECTS: pa.array(
                    [_ipc_bytes(rejects) if rejects is not None else None], pa.binary()
                ),
            },
            schema=self.schema,
        )
        if partial is None or partial.num_rows == 0:
            return marker
        return pa.concat_tables([partial, marker])


class _Partials:
    """A block's work in progress: counts, rejects, and partial top-ks of scored slices.

    Mapped rows are scored once ``chunk_rows`` of them have gathered (small files share a
    predict call), each scored slice is cut to its partial top-k, and :meth:`result` merges
    them into the block's partial.
    """

    def __init__(self, scorer: _Scorer) -> None:
        self.scorer = scorer
        self.counts: Counter[str] = Counter()
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.partials: list[pa.Table] = []
        self.reject_tables: list[pa.Table] = []

    def add(self, mapped: MappedChunk, seg: int) -> None:
        self.counts.update(mapped.counts)
        r = mapped.rejects
        if r is not None and r.num_rows:
            self.reject_tables.append(
                r.append_column(_SEG, pa.array(np.full(r.num_rows, seg, np.int32)))
            )
        if mapped.table.num_rows:
            self.pending.append(mapped.table)
            self.pending_rows += mapped.table.num_rows
            if self.pending_rows >= self.scorer.config.chunk_rows:
                self._score()

    def _score(self) -> None:
        from batchrank.scoring.engine import score_mapped
        from batchrank.scoring.ids import MappedChunk
        from batchrank.scoring.topk import partial_topk

        if not self.pending:
            return
        table = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending, self.pending_rows = [], 0
        scored = score_mapped(MappedChunk(table=table), self.scorer.predictor)
        self.partials.append(partial_topk(scored, self.scorer.config.top_k))

    def rejects(self) -> pa.Table | None:
        return pa.concat_tables(self.reject_tables) if self.reject_tables else None

    def result(self) -> pa.Table | None:
        """The block's partial top-k in the output schema (None when nothing was kept)."""
        from batchrank.scoring.topk import merge_partials

        self._score()
        if not self.partials:
            return None
        s = self.scorer
        merged = (
            self.partials[0]
            if len(self.partials) == 1
            else merge_partials(
                self.partials, s.config.top_k, user_type=s.user_type, item_type=s.item_type
            )
        )
        return s._with_bucket(merged)


def _bucket_of(users: pa.ChunkedArray | pa.Array, buckets: int) -> pa.Array:
    """A stable bucket in ``[0, buckets)`` per user id (integer ids: modulo; text: a hash)."""
    import polars as pl

    series = pl.from_arrow(pa.table({"u": users}))["u"]  # type: ignore[index]
    if series.dtype.is_integer():
        out = (series % buckets).cast(pl.Int32)
    else:
        out = (series.hash(seed=0) % buckets).cast(pl.Int32)
    return out.to_arrow()


def _merge_group(group: pa.Table, k: int) -> pa.Table:
    """``map_groups`` function: the exact top-k of one bucket (marker rows pass through)."""
    from batchrank.scoring.topk import partial_topk

    bucket = group.column(_BUCKET)
    if group.num_rows == 0 or bucket[0].as_py() == _META_BUCKET:
        return group
    schema = group.schema
    merged = partial_topk(group, k)
    n = merged.num_rows
    return pa.table(
        {
            "user_id": merged.column("user_id"),
            "movie_id": merged.column("movie_id"),
            "score": merged.column("score"),
            "stars": merged.column("stars"),
            _BUCKET: pa.array(np.full(n, bucket[0].as_py(), np.int32)),
            _META: pa.nulls(n, pa.binary()),
            _REJECTS: pa.nulls(n, pa.binary()),
        },
        schema=schema,
    )


# ---------------------------------------------------------------------------------------------
# the driver


def _start_ray(address: str | None) -> bool:
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
    with _quiet_loggers(quiet, logging.ERROR), warnings.catch_warnings():
        # Ray starts its processes with fork+exec; JAX warns about any fork
        warnings.filterwarnings(
            "ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning
        )
        ray.init(**kwargs)
    return True


@contextlib.contextmanager
def _quiet_loggers(names: Sequence[str], level: int) -> Iterator[None]:
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
def _data_context(chunk_rows: int) -> Iterator[Any]:
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
    target = max(1 << 20, chunk_rows * _BLOCK_BYTES_PER_ROW)
    if ctx.target_max_block_size:
        target = min(ctx.target_max_block_size, target)
        ctx.target_max_block_size = target
    ctx.target_min_block_size = min(max(ctx.target_min_block_size or 0, target // 2), target)
    if hasattr(ctx, "use_datasource_v2"):
        # The V2 Parquet reader lists files again inside Ray tasks, from several threads; without
        # aiohttp those threads race on importing fsspec's HTTP module (see
        # _avoid_fsspec_http_race) and a read fails now and then. V1 resolves paths once, here.
        ctx.use_datasource_v2 = False
    # "progress bars disabled" is what we asked for; execution start/finish lines are INFO; a
    # failed task is logged with its traceback before it is raised here, where run_ray reports it
    with (
        _quiet_loggers(["ray.data._internal.progress"], logging.ERROR),
        _quiet_loggers(
            [
                "ray.data._internal.execution.streaming_executor_state",
                "ray.data._internal.execution.operators.actor_pool_map_operator",
                "ray.data.exceptions",
            ],
            logging.CRITICAL,
        ),
        _quiet_loggers(["ray.data"], logging.WARNING),
        DataContext.current(ctx),
    ):
        yield ctx


def _read_groups(files: Sequence[InputFile], user_col: str, item_col: str) -> list[list[int]]:
    """File indices grouped so that one Ray read covers files with equal id column types."""
    import pyarrow.parquet as pq

    groups: dict[tuple[str, ...], list[int]] = {}
    for i, f in enumerate(files):
        if f.format == "csv":
            key: tuple[str, ...] = ("csv",)
        else:
            schema = pq.read_schema(f.path)
            key = ("parquet", str(schema.field(user_col).type), str(schema.field(item_col).type))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _file_dataset(prep: Prepared, paths: Sequence[str], groups: list[list[int]]) -> Any:
    import pyarrow.csv as pacsv
    import ray.data

    spec = prep.spec
    columns = list(dict.fromkeys([spec.user_col, spec.item_col]))
    datasets = []
    for group in groups:
        group_paths = [paths[i] for i in group]
        if prep.files[group[0]].format == "csv":
            convert = pacsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=True,
                null_values=[""],
            )
            ds = ray.data.read_csv(
                group_paths,
                convert_options=convert,
                include_paths=True,
                partitioning=None,  # type: ignore[arg-type]  # None is accepted: no partitions
                file_extensions=None,
            )
        else:
            ds = ray.data.read_parquet(
                group_paths, include_paths=True, partitioning=None, file_extensions=None
            )
        datasets.append(ds.select_columns([*columns, _PATH]))
    return datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])


def _actor_cpus(concurrency: int | None, cluster_cpus: float) -> float | None:
    """CPUs each actor reserves, when a fixed pool would otherwise leave none for reading.

    Ray Data's read tasks need a CPU each; a fixed pool of one-CPU actors as large as the
    cluster would hold every CPU and wait forever for input. Such a pool shares all CPUs but
    one between its actors (JAX still uses every core it sees: this is a reservation only).
    None: the default of one CPU per actor.
    """
    if not concurrency or not cluster_cpus or concurrency <= cluster_cpus - 1:
        return None
    share = max(cluster_cpus - 1, 0.0) / concurrency
    log.info(
        "%d scoring actors on %g CPUs: each reserves %.2f CPU so that reads can run",
        concurrency,
        cluster_cpus,
        share,
        extra={"event": "ray_actor_cpus"},
    )
    return share


def _cross_dataset(prep: Prepared, users_per_block: int) -> tuple[Any, int]:
    import ray.data

    assert prep.cross_users is not None
    blocks = max(1, -(-len(prep.cross_users) // users_per_block))
    return ray.data.range(blocks, override_num_blocks=blocks).rename_columns({"id": _BLOCK}), blocks


class _Rejects:
    """Orders reject rows as the local engine writes them: file by file, rows ascending.

    Files of one read group arrive in order, groups interleave; a file's rejects are written
    once every earlier file is complete (a later file of its group was seen, or the run ended).
    """

    def __init__(self, prep: Prepared, groups: list[list[int]]) -> None:
        self.prep = prep
        self.group_of = {i: g for g, members in enumerate(groups) for i in members}
        self.high = [-1] * len(groups)
        self.pending: dict[int, list[pa.Table]] = {}
        self.next = 0
        self.n = len(prep.files)

    def seen(self, file_index: int) -> None:
        g = self.group_of[file_index]
        self.high[g] = max(self.high[g], file_index)

    def add(self, file_index: int, table: pa.Table) -> None:
        self.pending.setdefault(file_index, []).append(table)

    def flush(self, final: bool = False) -> None:
        while self.next < self.n and (final or self.high[self.group_of[self.next]] > self.next):
            for table in self.pending.pop(self.next, []):
                self.prep.record_rejects(table)
            self.next += 1


_ROW_RE = r"^(?P<path>.*) row (?P<row>\d+):"
_ERROR_LINE = re.compile(r"^batchrank\.errors\.(\w+): (.*)$", re.MULTILINE)


def _shift_row(message: str, path: str, offset: int) -> str:
    """Turn a segment-relative ``PATH row N:`` into the file's row ``N + offset``."""
    m = re.match(_ROW_RE, message)
    if m is None or m.group("path") != path:
        return message
    return f"{path} row {int(m.group('row')) + offset}:{message[m.end() :]}"


def _unwrap(e: BaseException) -> BaseException | None:
    """The batchrank error (or Arrow read error) at the root of a Ray exception, if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        cause = getattr(cur, "cause", None)
        if isinstance(cur, BatchrankError):
            if isinstance(cause, BatchrankError):
                return cause
            if type(cur).__module__.startswith("batchrank."):
                return cur
            # Ray's dual class (RayTaskError and the cause's class): rebuild the plain error
            base = next(t for t in type(cur).__mro__ if t.__module__.startswith("batchrank."))
            return base(*cur.args)
        if isinstance(cur, pa.ArrowException) and not isinstance(cause, BaseException):
            return DataError(f"cannot read the input files on Ray: {first_line(cur)}")
        # a RayTaskError names its task first, as in "ray::ReadCSV->SplitBlocks(4)() (pid=...)"
        if isinstance(cause, Exception) and "ray::Read" in first_line(cur):
            # Ray's readers re-raise Arrow's parse errors as "Failed to read CSV file: PATH. ..."
            # and drop the Arrow message (the row) on the way
            what = first_line(cause).split(". ")[0]
            return DataError(
                f"cannot read the input files on Ray: {what}; --engine local names the bad row"
            )
        stack.extend(
            [cur.__context__, cur.__cause__, cause if isinstance(cause, BaseException) else None]
        )
    # an actor that failed to start (a ModelError in _Scorer.__init__) comes back as an
    # ActorDiedError whose message holds the remote traceback as text
    for match in reversed(list(_ERROR_LINE.finditer(str(e)))):
        cls = getattr(errors, match.group(1), None)
        if isinstance(cls, type) and issubclass(cls, BatchrankError):
            return cls(match.group(2))
    return None


def run_ray(
    prep: Prepared, *, combine: Combine = "driver", buckets: int = DEFAULT_BUCKETS
) -> Scored:
    """Score a prepared run on Ray Data; return the same :class:`Scored` as the local engine.

    Args:
        prep: the prepared run (``prep.spec.engine == "ray"``).
        combine: ``"driver"``: stream every actor's partial top-k into the driver's state;
            ``"buckets"``: merge partials on Ray first (``groupby(bucket).map_groups``).
        buckets: user buckets for ``combine="buckets"``.

    Raises:
        ConfigError: ``ray`` is not installed, or an id column is named ``path``.
        DataError: bad input rows (as the local engine), or an input file Ray cannot read.
        ModelError: a worker cannot load the bundle.
    """
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--engine ray needs Ray Data: pip install 'batchrank[ray]'") from e

    spec = prep.spec
    if spec.work_dir is not None:
        log.warning(
            "--work-dir (resume) is not supported by the Ray engine; a re-run starts over",
            extra={"event": "ray_no_resume"},
        )
    if prep.cross_users is None and _PATH in (spec.user_col, spec.item_col):
        raise ConfigError(
            f"the Ray engine cannot read an id column named `{_PATH}` (Ray's readers use that "
            "name for the file path); rename the column or use --engine local"
        )
    _avoid_fsspec_http_race()
    t0 = time.perf_counter()
    started = _start_ray(spec.ray_address)
    t1 = time.perf_counter()
    try:
        with _data_context(spec.chunk_rows):
            result, first = _run(prep, combine, buckets if combine == "buckets" else 0)
        log.info(
            "ray engine: %s in %.1fs; scored in %.1fs, the first batch back after %.1fs",
            "started Ray" if started else "joined Ray",
            t1 - t0,
            time.perf_counter() - t1,
            first - t1,
            extra={"event": "ray_done"},
        )
        return result
    except BatchrankError:
        raise
    except Exception as e:
        root = _unwrap(e)
        if root is not None:
            raise root from e
        raise
    finally:
        if started:
            ray.shutdown()


def _run(prep: Prepared, combine: Combine, buckets: int) -> tuple[Scored, float]:
    """Build and run the pipeline; return the result and when its first batch came back."""
    import ray.data

    from batchrank.scoring.engine import Scored
    from batchrank.scoring.progress import make_progress
    from batchrank.scoring.topk import PARTIAL_COLUMNS

    spec = prep.spec
    n_items = len(prep.bundle.items)
    paths = [str(f.path) for f in prep.files]
    users_per_block = max(1, min(spec.chunk_rows, CROSS_JOIN_FRAGMENT_PAIRS) // max(n_items, 1))
    groups: list[list[int]] = []
    if prep.cross_users is not None:
        ds, blocks = _cross_dataset(prep, users_per_block)
        total: int | None = len(prep.cross_users) * n_items
        batch_size: int | None = 1
        fragments = blocks
    else:
        groups = _read_groups(prep.files, spec.user_col, spec.item_col)
        ds = _file_dataset(prep, paths, groups)
        total = (
            sum(f.rows or 0 for f in prep.files)
            if all(f.format == "parquet" and f.rows is not None for f in prep.files)
            else None
        )
        batch_size = None
        fragments = len(prep.files)
    bundle_users = prep.bundle.users.ids
    cross = prep.cross_users
    config = _WorkerConfig(
        model=str(Path(spec.model).resolve()),
        fingerprint=prep.bundle.fingerprint,
        batch_size=spec.batch_size,
        top_k=spec.top_k,
        unknown=spec.unknown,
        user_col=spec.user_col,
        item_col=spec.item_col,
        files=tuple(paths),
        chunk_rows=spec.chunk_rows,
        buckets=buckets,
        cross_users=None if cross is None or cross.equals(bundle_users) else cross,
        users_per_block=users_per_block,
        fractional_gpu=0 < spec.gpus_per_worker < 1,
        score_table=prep.use_score_table(),
    )
    if spec.concurrency:
        compute = ray.data.ActorPoolStrategy(size=spec.concurrency)
    else:
        compute = ray.data.ActorPoolStrategy(min_size=1)
    # actors that die are restarted and their batch retried by Ray Data's defaults
    # (max_restarts=-1, max_task_retries=-1); Ray deprecates passing other values here
    remote: dict[str, Any] = {}
    actor_cpus = _actor_cpus(spec.concurrency, ray.cluster_resources().get("CPU", 0.0))
    if actor_cpus is not None:
        remote["num_cpus"] = actor_cpus
    if spec.gpus_per_worker:
        remote["num_gpus"] = spec.gpus_per_worker
    scored_ds = ds.map_batches(
        _Scorer,
        fn_constructor_kwargs={"config": config},
        batch_size=batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=compute,
        **remote,
    )
    topk = prep.new_topk()
    result = Scored(topk=topk, fragments_total=fragments)
    try:
        with make_progress(spec.progress, total, "rows") as progress:
            collect = _Collector(prep, groups, result, progress)
            if combine == "buckets":
                from ray.data.expressions import col

                # the markers first, in order (exact rows, errors before the shuffle) ...
                materialized = scored_ds.materialize()
                markers = materialized.filter(expr=col(_BUCKET) == _META_BUCKET)
                for block in markers.iter_batches(batch_format="pyarrow", batch_size=None):
                    collect.markers(block)
                # ... then each bucket of users merged on Ray
                merged = (
                    materialized.filter(expr=col(_BUCKET) >= 0)
                    .groupby(_BUCKET)
                    .map_groups(_merge_group, batch_format="pyarrow", fn_kwargs={"k": spec.top_k})
                )
                for block in merged.iter_batches(batch_format="pyarrow", batch_size=None):
                    if block.num_rows:
                        topk.add(block.select(list(PARTIAL_COLUMNS)))
            else:
                for block in scored_ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    is_marker = pc.equal(block.column(_BUCKET), _META_BUCKET)
                    rows = block.filter(pc.invert(is_marker))
                    if rows.num_rows:
                        topk.add(rows.select(list(PARTIAL_COLUMNS)))
                    collect.markers(block.filter(is_marker))
            collect.finish()
    except BaseException:
        topk.close()
        raise
    return result, collect.first or time.perf_counter()


class _Collector:
    """The driver's side of the marker rows: counts, progress, exact reject rows, data errors."""

    def __init__(
        self, prep: Prepared, groups: list[list[int]], result: Scored, progress: Any
    ) -> None:
        self.prep = prep
        self.paths = [str(f.path) for f in prep.files]
        self.result = result
        self.progress = progress
        self.rejects = _Rejects(prep, groups)
        self.seen = [0] * len(prep.files)
        """Rows of each file in the batches so far (batches arrive in input order)."""
        self.first: float | None = None

    def markers(self, block: pa.Table) -> None:
        """Handle the marker rows of a block of output, in order."""
        metas = block.column(_META).to_pylist()
        rejects = block.column(_REJECTS).to_pylist()
        for meta, rej in zip(metas, rejects, strict=True):
            if meta is not None:
                self._marker(json.loads(meta), rej)

    def _marker(self, meta: dict[str, Any], rejects_ipc: bytes | None) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        bases = []
        for fi, n in meta["segments"]:
            bases.append(self.seen[fi])
            self.seen[fi] += n
            self.rejects.seen(fi)
        counts = meta["counts"]
        self.result.counts.update(counts)
        self.progress.advance(counts.get("read", 0), counts.get("read", 0))
        error = meta.get("error")
        if error is not None:
            seg, message = error["seg"], error["message"]
            if 0 <= seg < len(bases):
                fi = meta["segments"][seg][0]
                message = _shift_row(message, self.paths[fi], bases[seg])
            raise DataError(message)
        if rejects_ipc is not None and self.prep.spec.rejects is not None:
            table = _ipc_table(rejects_ipc)
            seg_col = table.column(_SEG).to_numpy()
            rows = table.column("row").to_numpy() + np.asarray(bases, np.int64)[seg_col]
            table = table.set_column(
                table.schema.get_field_index("row"), "row", pa.array(rows, pa.int64())
            )
            for seg in np.unique(seg_col):
                fi = meta["segments"][int(seg)][0]
                part = table.filter(pa.array(seg_col == seg)).drop_columns([_SEG])
                self.rejects.add(fi, part)
        self.rejects.flush()

    def finish(self) -> None:
        """Write the rejects still held back."""
        self.rejects.flush(final=True)
