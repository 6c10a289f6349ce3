"""The Ray engine's driver: build the dataset, run the actors, collect and merge partials.

Inputs are read with Ray Data's Parquet and CSV readers: one read per group of files whose id
columns have the same types, ``path`` included so every row is traced to its file.
``--pairs all`` is ``ray.data.range`` over blocks of users. Execution keeps the input order
(``preserve_order``), so the driver knows how many rows of each file came before a batch and
turns the segment rows of rejects and errors into file rows (a field, never message text).

The driver combines the partials into the run's top-k state as they stream in
(``combine="driver"``, the default), or first merges them on Ray by user bucket
(``combine="buckets"``); the README's Ray section has the measurement behind the default.
Failures: Ray Data's actor-pool defaults restart a dead actor and retry its batch; a batchrank
error comes back as data in a marker row and is raised here, before anything is committed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrank import errors
from batchrank.errors import BatchrankError, ConfigError, DataError, first_line
from batchrank.fs import is_remote
from batchrank.scoring.context import RunContext, new_topk
from batchrank.scoring.engine import Scored, rejects_spool
from batchrank.scoring.prepare import CROSS_JOIN_FRAGMENT_PAIRS
from batchrank.scoring.ray import session, storage, worker
from batchrank.scoring.ray.worker import BLOCK, BUCKET, META, META_BUCKET, PATH, REJECTS, SEG
from batchrank.scoring.reader import InputFile
from batchrank.scoring.schema import PARTIAL_COLUMNS
from batchrank.scoring.workdir import RejectsPart

__all__ = ["DEFAULT_BUCKETS", "Combine", "run_ray"]

log = logging.getLogger("batchrank.score")

Combine = Literal["driver", "buckets"]

DEFAULT_BUCKETS = 64
"""Groups of users for ``combine="buckets"``."""


def run_ray(
    ctx: RunContext, *, combine: Combine = "driver", buckets: int = DEFAULT_BUCKETS
) -> Scored:
    """Score a prepared run on Ray Data; return the same :class:`Scored` as the local engine.

    Raises:
        ConfigError: ``ray`` is not installed, or an id column is named ``path``.
        DataError: bad input rows (as the local engine), or an input file Ray cannot read.
        ModelError: a worker cannot load the bundle.
    """
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--engine ray needs Ray Data: pip install 'batchrank[ray]'") from e

    spec = ctx.spec
    if spec.work_dir is not None:
        log.warning(
            "--work-dir (resume) is not supported by the Ray engine; a re-run starts over",
            extra={"event": "ray_no_resume"},
        )
    if ctx.cross_users is None and PATH in (spec.user_column, spec.item_column):
        raise ConfigError(
            f"the Ray engine cannot read an id column named `{PATH}` (Ray's readers use that "
            "name for the file path); rename the column or use --engine local"
        )
    session.avoid_fsspec_http_race()
    t0 = time.perf_counter()
    started = session.start_ray(spec.ray_address)
    t1 = time.perf_counter()
    try:
        with session.data_context(spec.chunk_rows):
            result, first, nodes = _run(ctx, combine, buckets if combine == "buckets" else 0)
        log.info(
            "ray engine: %s in %.1fs; scored in %.1fs on %d node(s), the first batch back "
            "after %.1fs",
            "started Ray" if started else "joined Ray",
            t1 - t0,
            time.perf_counter() - t1,
            len(nodes),
            first - t1,
            extra={"event": "ray_done", "nodes": sorted(nodes)},
        )
        return result
    except BatchrankError:
        raise
    except Exception as e:
        root = read_error(e)
        if root is not None:
            raise root from e
        raise
    finally:
        if started:
            ray.shutdown()


def read_error(e: BaseException) -> DataError | None:
    """A :class:`DataError` for an input file that one of Ray's read tasks could not parse.

    The scoring actors return every exception as data (see :mod:`.worker`), so a
    ``RayTaskError`` whose cause is an Arrow, value or OS error comes from Ray's own tasks: its
    readers (they re-raise Arrow's parse errors as ``ValueError`` and drop the row). Decided by
    exception types, never by message text; None for anything else.
    """
    from ray.exceptions import RayTaskError

    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        cause = getattr(cur, "cause", None)
        if isinstance(cur, RayTaskError) and isinstance(cause, _READ_ERRORS):
            return DataError(
                f"cannot read the input files on Ray ({first_line(cause)}); "
                "--engine local names the bad row"
            )
        stack.extend(
            [cur.__context__, cur.__cause__, cause if isinstance(cause, BaseException) else None]
        )
    return None


_READ_ERRORS = (pa.ArrowException, ValueError, OSError)


def read_groups(files: Sequence[InputFile], user_col: str, item_col: str) -> list[list[int]]:
    """File indices grouped so that one Ray read covers files with equal id column types."""
    from batchrank.scoring.reader import parquet_file

    groups: dict[tuple[str, ...], list[int]] = {}
    for i, f in enumerate(files):
        if f.format == "csv":
            key: tuple[str, ...] = ("csv",)
        else:
            schema = parquet_file(f.path).schema_arrow
            key = ("parquet", str(schema.field(user_col).type), str(schema.field(item_col).type))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _file_dataset(ctx: RunContext, paths: Sequence[str], groups: list[list[int]]) -> Any:
    import pyarrow.csv as pacsv
    import ray.data

    spec = ctx.spec
    columns = list(dict.fromkeys([spec.user_column, spec.item_column]))
    datasets = []
    for group in groups:
        group_paths = [paths[i] for i in group]
        # objects: the file system batchrank resolved (endpoint, region, the driver's static
        # keys); Ray's own would ignore AWS_ENDPOINT_URL. It pickles to the read tasks.
        first = ctx.files[group[0]].path
        fs = {"filesystem": storage.read_filesystem(first)} if is_remote(first) else {}
        if ctx.files[group[0]].format == "csv":
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
                **fs,
            )
        else:
            ds = ray.data.read_parquet(
                group_paths, include_paths=True, partitioning=None, file_extensions=None, **fs
            )
        datasets.append(ds.select_columns([*columns, PATH]))
    return datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])


def _config(ctx: RunContext, paths: list[str], buckets: int, per_block: int) -> Any:
    spec, cross = ctx.spec, ctx.cross_users
    return worker.WorkerConfig(
        model=str(spec.model) if is_remote(spec.model) else str(Path(spec.model).resolve()),
        fingerprint=ctx.bundle.fingerprint,
        batch_size=spec.batch_size,
        top_k=spec.top_k,
        unknown=spec.unknown,
        user_col=spec.user_column,
        item_col=spec.item_column,
        files=tuple(paths),
        chunk_rows=spec.chunk_rows,
        buckets=buckets,
        cross_users=None if cross is None or cross.equals(ctx.bundle.users.ids) else cross,
        users_per_block=per_block,
        fractional_gpu=0 < spec.gpus_per_worker < 1,
        score_table=ctx.score_table,
        rules=ctx.rules,
        precision=ctx.spec.precision,
        storage=storage.worker_storage(),
    )


def _run(ctx: RunContext, combine: Combine, buckets: int) -> tuple[Scored, float, set[str]]:
    """Build and run the pipeline; return the result, when its first batch came back and the
    ids of the Ray nodes whose actors scored batches."""
    import ray.data

    from batchrank.scoring.progress import make_progress

    spec = ctx.spec
    paths = [str(f.path) for f in ctx.files]
    n_items = max(len(ctx.bundle.items), 1)
    per_block = max(1, min(spec.chunk_rows, CROSS_JOIN_FRAGMENT_PAIRS) // n_items)
    if ctx.cross_users is not None:
        blocks = max(1, -(-len(ctx.cross_users) // per_block))
        ds = ray.data.range(blocks, override_num_blocks=blocks).rename_columns({"id": BLOCK})
        batch_size: int | None = 1
        total: int | None = ctx.total_work
        fragments = blocks
    else:
        ds = _file_dataset(ctx, paths, read_groups(ctx.files, spec.user_column, spec.item_column))
        batch_size = None
        total = ctx.total_work if ctx.work_unit == "rows" else None
        fragments = len(ctx.files)
    compute = (
        ray.data.ActorPoolStrategy(size=spec.concurrency)
        if spec.concurrency
        else ray.data.ActorPoolStrategy(min_size=1)
    )
    # actors that die are restarted and their batch retried by Ray Data's defaults
    # (max_restarts=-1, max_task_retries=-1); Ray deprecates passing other values here
    remote: dict[str, Any] = {}
    nodes = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0)
    cpus = session.actor_cpus(spec.concurrency, ray.cluster_resources().get("CPU", 0.0), nodes)
    if cpus is not None:
        remote["num_cpus"] = cpus
    if spec.gpus_per_worker:
        remote["num_gpus"] = spec.gpus_per_worker
    scored_ds = ds.map_batches(
        worker.Scorer,
        fn_constructor_kwargs={"config": _config(ctx, paths, buckets, per_block)},
        batch_size=batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=compute,
        **remote,
    )
    topk = new_topk(ctx)
    result = Scored(topk=topk, fragments_total=fragments)
    try:
        with make_progress(spec.progress, total, "rows") as progress:
            collect = _Collector(ctx, result, progress)
            for block in _partials(scored_ds, combine, spec.top_k, collect, buckets):
                if block.num_rows:
                    topk.add(block.select(list(PARTIAL_COLUMNS)))
        result.rejects = collect.reject_parts()
    except BaseException:
        topk.close()
        raise
    return result, collect.first or time.perf_counter(), collect.nodes


def _partials(
    scored_ds: Any, combine: Combine, k: int, collect: _Collector, buckets: int = 0
) -> Any:
    """The partial top-k rows, handing each marker row to ``collect`` in input order."""
    if combine == "buckets":
        from ray.data.expressions import col

        # the markers first, in order (exact rows, errors before the shuffle) ...
        materialized = scored_ds.materialize()
        markers = materialized.filter(expr=col(BUCKET) == META_BUCKET)
        for block in markers.iter_batches(batch_format="pyarrow", batch_size=None):
            collect.markers(block)
        # ... then each bucket of users merged on Ray; one shuffle partition per bucket (Ray's
        # default, 200 partitions, would mostly be empty: there are only `buckets` keys)
        merged = (
            materialized.filter(expr=col(BUCKET) >= 0)
            .groupby(BUCKET, num_partitions=max(1, buckets))
            .map_groups(worker.merge_group, batch_format="pyarrow", fn_kwargs={"k": k})
        )
        yield from merged.iter_batches(batch_format="pyarrow", batch_size=None)
        return
    for block in scored_ds.iter_batches(batch_format="pyarrow", batch_size=None):
        is_marker = pc.equal(block.column(BUCKET), META_BUCKET)
        yield block.filter(pc.invert(is_marker))
        collect.markers(block.filter(is_marker))


class _Collector:
    """The driver's side of the marker rows: counts, progress, file rows, errors, rejects."""

    def __init__(self, ctx: RunContext, result: Scored, progress: Any) -> None:
        self.ctx = ctx
        self.paths = [str(f.path) for f in ctx.files]
        self.result = result
        self.progress = progress
        self.seen = [0] * len(ctx.files)
        """Rows of each file in the batches so far (batches arrive in input order)."""
        self.parts: list[tuple[int, int, Path]] = []
        self.first: float | None = None
        self.nodes: set[str] = set()
        """The Ray nodes whose actors sent marker rows."""

    def markers(self, block: pa.Table) -> None:
        """Handle the marker rows of a block of output, in order."""
        metas = block.column(META).to_pylist()
        rejects = block.column(REJECTS).to_pylist()
        for meta, rej in zip(metas, rejects, strict=True):
            if meta is not None:
                self._marker(json.loads(meta), rej)

    def _marker(self, meta: dict[str, Any], rejects_ipc: bytes | None) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        if meta.get("node"):
            self.nodes.add(meta["node"])
        bases = []
        for fi, n in meta["segments"]:
            bases.append(self.seen[fi])
            self.seen[fi] += n
        counts = meta["counts"]
        self.result.counts.update(counts)
        self.progress.advance(counts.get("read", 0), counts.get("read", 0))
        if meta.get("error") is not None:
            raise _error(meta["error"], bases)
        if rejects_ipc is not None and self.ctx.spec.rejects is not None:
            self._rejects(worker.ipc_table(rejects_ipc), meta["segments"], bases)

    def _rejects(self, table: pa.Table, segments: list[list[int]], bases: list[int]) -> None:
        """Spool a batch's rejects, per file, with file rows (written in file order at commit)."""
        seg_col = table.column(SEG).to_numpy()
        rows = table.column("row").to_numpy() + np.asarray(bases, np.int64)[seg_col]
        table = table.set_column(table.schema.get_field_index("row"), "row", pa.array(rows))
        for seg in np.unique(seg_col):
            fi = segments[int(seg)][0]
            n = len(self.parts)
            part = RejectsPart(rejects_spool(self.ctx) / f"rejects-{fi:08d}-{n:08d}.arrow")
            part.write(table.filter(pa.array(seg_col == seg)).drop_columns([SEG]))
            path = part.commit()
            assert path is not None
            self.parts.append((fi, n, path))

    def reject_parts(self) -> list[Path]:
        """The spooled rejects in the local engine's order: file by file, rows ascending."""
        return [p for _, _, p in sorted(self.parts)]


class _ActorFailed(RuntimeError):
    """An unexpected exception in a scoring actor (a bug), with the actor's traceback."""


def _error(data: dict[str, Any], bases: list[int]) -> Exception:
    """The batchrank error an actor reported, its row made the file's row."""
    if data["type"] == "bug":
        return _ActorFailed(f"a Ray scoring actor failed: {data['message']}\n{data['traceback']}")
    cls: Any = getattr(errors, data["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, BatchrankError)):
        cls = BatchrankError
    if not issubclass(cls, DataError):
        return cls(data["message"])
    error: DataError = cls(
        data["message"], file=data["file"], row=data["row"], detail=data["detail"]
    )
    seg = data["seg"]
    return error.shifted(bases[seg]) if 0 <= seg < len(bases) else error
