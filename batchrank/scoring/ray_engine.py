"""The Ray Data engine: the local engine's stages inside a pool of Ray actors.

Inputs are read with Ray Data's Parquet and CSV readers (one read per group of files whose id
columns share a type, so blocks of different files can always be concatenated; ``path`` is
included so every row is traced to its file). A pool of :class:`_Scorer` actors, each loading
the bundle once, runs the local engine's stages on every batch: ``ids.map_ids``,
``engine.score_mapped`` (the jitted predict and the rescale) and ``topk.partial_topk``. Each
output batch is the batch's partial top-k (at most k rows per user) followed by one *marker
row* whose ``_meta`` column holds the batch's counts, its file segments and any data error as
JSON, and whose ``_rejects`` column holds its rejected rows as an Arrow IPC stream.

The driver combines the partials into the run's :class:`~batchrank.scoring.topk.TopK` state as
they stream in (``combine="driver"``, the default), or first merges them on Ray by hashing
users into a bounded number of buckets (``combine="buckets"``, ``groupby(bucket).map_groups``);
see docs/ray.md for the measurement that made the driver merge the default. Execution keeps the
input order (``preserve_order``), so the driver knows how many rows of each file came before a
batch: reject rows, and the row named by ``--unknown fail``, carry exact file row numbers, and
the rejects file is written in the local engine's order.

``--pairs all`` is generated on Ray: ``ray.data.range`` over blocks of users, each actor
generating its block's pairs chunk by chunk; a block's users belong to no other block, so its
partial is final.

Failure handling: an actor that dies (a crashed worker, a lost node) is restarted
(``max_restarts=-1``, Ray Data's default) and its batch retried up to :data:`MAX_TASK_RETRIES`
times (Ray Data's default is unbounded, which would loop forever on a batch that kills its
worker). Counts stay exact under retries: only the outputs of completed tasks reach the
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

from batchrank.errors import BatchrankError, ConfigError, DataError, ModelError
from batchrank.scoring.prepare import CROSS_JOIN_FRAGMENT_PAIRS, Prepared

if TYPE_CHECKING:
    from batchrank.scoring.engine import Scored
    from batchrank.scoring.reader import InputFile

__all__ = ["Combine", "run_ray"]

log = logging.getLogger("batchrank.score")

Combine = Literal["driver", "buckets"]

MAX_TASK_RETRIES = 4
"""Retries of a batch whose actor died (Ray Data's default is unbounded)."""

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
    """Paths of the input files as the local engine names them (in rejects and messages)."""
    ray_paths: tuple[str, ...]
    """The same files as passed to Ray's readers (the values of the ``path`` column)."""
    chunk_rows: int
    buckets: int
    cross_users: pa.Array | None
    """``--pairs all --users``: the users to score (None: every user of the bundle)."""
    users_per_block: int
    fractional_gpu: bool


def _output_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    return pa.schema(
        [
            pa.field("user_id", user_type),
            pa.field("movie_id", item_type),
            pa.field("score", pa.float32()),
            pa.field("stars", pa.float32()),
            pa.field(_BUCKET, pa.int32()),
            pa.field(_META, pa.binary()),
            pa.field(_REJECTS, pa.binary()),
        ]
    )


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
        from batchrank.scoring.predict import make_predictor

        model = Path(config.model)
        if not model.exists():
            raise ModelError(
                f"{model}: model bundle not found on a Ray worker; on a cluster the bundle must "
                "be on storage every node can read"
            )
        self.bundle = load_bundle(model)
        if self.bundle.fingerprint != config.fingerprint:
            raise ModelError(
                f"{model}: the bundle a Ray worker loaded differs from the driver's "
                f"(fingerprint {self.bundle.fingerprint}, expected {config.fingerprint})"
            )
        self.config = config
        self.predictor = make_predictor(self.bundle, batch_size=config.batch_size)
        self.user_type = pa.int64() if self.bundle.users.kind == "int" else pa.string()
        self.item_type = pa.int64() if self.bundle.items.kind == "int" else pa.string()
        self.schema = _output_schema(self.user_type, self.item_type)
        self.file_of = {p: i for i, p in enumerate(config.ray_paths)}
        for i, p in enumerate(config.ray_paths):
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
        from batchrank.scoring.engine import score_mapped
        from batchrank.scoring.ids import MappedChunk, map_ids
        from batchrank.scoring.reader import ITEM, USER, RawChunk

        cfg = self.config
        counts: Counter[str] = Counter()
        mapped_tables: list[pa.Table] = []
        rejects: list[pa.Table] = []
        segments: list[list[int]] = []
        for seg, (fi, start, n) in enumerate(self._segments(batch.column(_PATH))):
            part = batch.slice(start, n)
            segments.append([fi, n])
            raw = RawChunk(
                table=pa.table({USER: part.column(cfg.user_col), ITEM: part.column(cfg.item_col)}),
                file_index=fi,
                path=Path(cfg.files[fi]),
                first_row=1,  # rows are relative to the segment; the driver adds the offset
                source_columns=(cfg.user_col, cfg.item_col),
            )
            try:
                mapped = map_ids(raw, self.bundle.users, self.bundle.items, unknown=cfg.unknown)  # type: ignore[arg-type]
            except DataError as e:
                return self._marker(counts, segments, None, error={"seg": seg, "message": str(e)})
            counts.update(mapped.counts)
            if mapped.rejects is not None and mapped.rejects.num_rows:
                r = mapped.rejects
                rejects.append(r.append_column(_SEG, pa.array(np.full(r.num_rows, seg, np.int32))))
            if mapped.table.num_rows:
                mapped_tables.append(mapped.table)
        partial = None
        if mapped_tables:
            table = pa.concat_tables(mapped_tables) if len(mapped_tables) > 1 else mapped_tables[0]
            partial = self._partial(score_mapped(MappedChunk(table=table), self.predictor))
        rej = pa.concat_tables(rejects) if rejects else None
        return self._marker(counts, segments, rej, partial=partial)

    def _cross(self, batch: pa.Table) -> pa.Table:
        from batchrank.scoring.engine import score_mapped
        from batchrank.scoring.ids import map_ids
        from batchrank.scoring.reader import iter_cross_join
        from batchrank.scoring.topk import merge_partials

        cfg = self.config
        users_all = cfg.cross_users if cfg.cross_users is not None else self.bundle.users.ids
        items = self.bundle.items
        counts: Counter[str] = Counter()
        partials: list[pa.Table] = []
        for block in batch.column(_BLOCK).to_pylist():
            users = users_all.slice(int(block) * cfg.users_per_block, cfg.users_per_block)
            for raw in iter_cross_join(users, len(items), items.ids, chunk_rows=cfg.chunk_rows):
                try:
                    mapped = map_ids(raw, self.bundle.users, items, unknown=cfg.unknown)  # type: ignore[arg-type]
                except DataError as e:
                    return self._marker(counts, [], None, error={"seg": -1, "message": str(e)})
                counts.update(mapped.counts)
                if mapped.table.num_rows:
                    scored = score_mapped(mapped, self.predictor)
                    partials.append(self._partial(scored, bucket=False))
        partial = None
        if partials:
            merged = merge_partials(
                partials, cfg.top_k, user_type=self.user_type, item_type=self.item_type
            )
            partial = self._with_bucket(merged)
        return self._marker(counts, [], None, partial=partial)

    # -- output ---------------------------------------------------------------------------------

    def _partial(self, scored: pa.Table, bucket: bool = True) -> pa.Table:
        from batchrank.scoring.topk import partial_topk

        partial = partial_topk(scored, self.config.top_k)
        return self._with_bucket(partial) if bucket else partial

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
def _quiet_ray_data() -> Iterator[Any]:
    """A Ray Data context for this run: ordered, no progress bars, no per-run log lines."""
    from ray.data import DataContext

    ctx = DataContext.get_current().copy()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.execution_options.preserve_order = True
    # "progress bars disabled" is what we asked for; execution start/finish lines are INFO
    with (
        _quiet_loggers(["ray.data._internal.progress"], logging.ERROR),
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
    if _PATH in columns:
        raise ConfigError(
            f"the Ray engine cannot read an id column named `{_PATH}` (Ray's readers use that "
            "name for the file path); rename the column or use --engine local"
        )
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
            first = str(cur).strip().splitlines()[0] if str(cur).strip() else type(cur).__name__
            return DataError(f"cannot read the input files on Ray: {first}")
        stack.extend(
            [cur.__context__, cur.__cause__, cause if isinstance(cause, BaseException) else None]
        )
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
    _avoid_fsspec_http_race()
    t0 = time.perf_counter()
    started = _start_ray(spec.ray_address)
    t1 = time.perf_counter()
    try:
        with _quiet_ray_data():
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
        batch_size = spec.chunk_rows
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
        ray_paths=tuple(paths),
        chunk_rows=spec.chunk_rows,
        buckets=buckets,
        cross_users=None if cross is None or cross.equals(bundle_users) else cross,
        users_per_block=users_per_block,
        fractional_gpu=0 < spec.gpus_per_worker < 1,
    )
    if spec.concurrency:
        compute = ray.data.ActorPoolStrategy(size=spec.concurrency)
    else:
        compute = ray.data.ActorPoolStrategy(min_size=1)
    # restart actors that die (a crash, a lost node) for as long as it takes, but give up on a
    # batch that took its actor down MAX_TASK_RETRIES + 1 times (a poison batch, an OOM)
    remote: dict[str, Any] = {"max_restarts": -1, "max_task_retries": MAX_TASK_RETRIES}
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
    rejects = _Rejects(prep, groups)
    seen = [0] * len(prep.files)
    first: list[float] = []
    try:
        with make_progress(spec.progress, total, "rows") as progress:

            def on_meta(meta: dict[str, Any], rejects_ipc: bytes | None) -> None:
                if not first:
                    first.append(time.perf_counter())
                bases = []
                for fi, n in meta["segments"]:
                    bases.append(seen[fi])
                    seen[fi] += n
                    rejects.seen(fi)
                counts = meta["counts"]
                result.counts.update(counts)
                progress.advance(counts.get("read", 0), counts.get("read", 0))
                error = meta.get("error")
                if error is not None:
                    seg = error["seg"]
                    message = error["message"]
                    if 0 <= seg < len(bases):
                        fi = meta["segments"][seg][0]
                        message = _shift_row(message, paths[fi], bases[seg])
                    raise DataError(message)
                if rejects_ipc is not None and spec.rejects is not None:
                    table = _ipc_table(rejects_ipc)
                    seg_col = table.column(_SEG).to_numpy()
                    offsets = np.asarray(bases, np.int64)[seg_col]
                    table = table.set_column(
                        table.schema.get_field_index("row"),
                        "row",
                        pa.array(table.column("row").to_numpy() + offsets, pa.int64()),
                    )
                    for seg in np.unique(seg_col):
                        fi = meta["segments"][int(seg)][0]
                        part = table.filter(pa.array(seg_col == seg)).drop_columns([_SEG])
                        rejects.add(fi, part)
                rejects.flush()

            if combine == "buckets":
                materialized = scored_ds.materialize()
                from ray.data.expressions import col

                for block in materialized.filter(expr=col(_BUCKET) == _META_BUCKET).iter_batches(
                    batch_format="pyarrow", batch_size=None
                ):
                    _each_meta(block, on_meta)
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
                    is_meta = pc.equal(block.column(_BUCKET), _META_BUCKET)
                    data = block.filter(pc.invert(is_meta))
                    if data.num_rows:
                        topk.add(data.select(list(PARTIAL_COLUMNS)))
                    _each_meta(block.filter(is_meta), on_meta)
            rejects.flush(final=True)
    except BaseException:
        topk.close()
        raise
    return result, first[0] if first else time.perf_counter()


def _each_meta(block: pa.Table, on_meta: Any) -> None:
    metas = block.column(_META).to_pylist()
    rej = block.column(_REJECTS).to_pylist()
    for m, r in zip(metas, rej, strict=True):
        if m is not None:
            on_meta(json.loads(m), r)
