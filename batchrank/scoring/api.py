"""``batchrank.score``: the Python API of the scorer, for the CLI and for orchestrators."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from batchrank.errors import DataError
from batchrank.scoring.commit import Certificate, PublishedFile, commit_run
from batchrank.scoring.context import RunContext
from batchrank.scoring.engine import Scored, rejects_spool, run_local
from batchrank.scoring.guards import check_output_paths
from batchrank.scoring.manifest import REJECT_KEYS, build_manifest, rejects_entry
from batchrank.scoring.parts import PartWriter, file_entry
from batchrank.scoring.prepare import clean_spill_leftovers, prepare
from batchrank.scoring.rules import rule_inputs
from batchrank.scoring.spec import ScoreSpec
from batchrank.scoring.titles import join_titles
from batchrank.scoring.workdir import FragmentStore, copy_rejects
from batchrank.scoring.writers import OutputWriter
from batchrank.storage import Staged
from batchrank.storage.lock import output_lock

if TYPE_CHECKING:
    from batchrank.scoring.tables import TableWriter
    from batchrank.sinks.redis import RedisSink, RedisTarget

__all__ = ["ScoreSpec", "score", "score_spec"]

log = logging.getLogger("batchrank.score")


def score(spec: ScoreSpec | None = None, **options: Any) -> dict[str, Any]:
    """Score candidate pairs and write top-k lists per user; return the run's manifest.

    Pass a :class:`ScoreSpec`, or its fields as keyword arguments, for instance
    ``batchrank.score(model="build/models/sample", pairs=["cands.parquet"], out="top10.parquet")``.

    Raises:
        batchrank.errors.BatchrankError: a subclass per kind of problem (see ``errors``).
    """
    if spec is None:
        spec = ScoreSpec.from_options(**options)
    elif options:
        raise TypeError("pass a ScoreSpec or keyword options, not both")
    return score_spec(spec)


def _check_rejects(spec: ScoreSpec, counts: Counter[str]) -> None:
    read = counts.get("read", 0)
    rejected = sum(counts.get(k, 0) for k in REJECT_KEYS)
    if read and rejected / read > spec.max_reject_fraction:
        reasons = ", ".join(
            f"{k.removeprefix('rejected_')}: {counts[k]}" for k in REJECT_KEYS if counts.get(k)
        )
        raise DataError(
            f"{rejected} of {read} rows rejected ({100 * rejected / read:.2f}%), more than "
            f"--max-reject-fraction {spec.max_reject_fraction}; nothing written ({reasons})"
        )


def _run_engine(ctx: RunContext) -> Scored:
    if ctx.spec.engine == "ray":
        from batchrank.scoring.ray import run_ray

        return run_ray(ctx)
    return run_local(ctx)


def _open_writer(ctx: RunContext) -> OutputWriter | PartWriter | TableWriter:
    """The run's output writer; a table's is opened before scoring, so an incompatible table or
    a missing catalog fails the run before any work."""
    spec, bundle = ctx.spec, ctx.bundle
    metadata = {
        "batchrank.model_fingerprint": bundle.fingerprint,
        "batchrank.top_k": str(spec.top_k),
        "batchrank.layout": spec.layout,
        "batchrank.rating_scale": f"{bundle.transform.low:g},{bundle.transform.high:g}",
    }
    assert spec.format is not None
    if spec.is_table:
        from batchrank.scoring.tables import open_table_writer

        return open_table_writer(
            spec,
            run_id=ctx.run_id,
            user_type=ctx.user_type,
            item_type=ctx.item_type,
            record={k: v for k, v in metadata.items() if k != "batchrank.layout"},
        )
    options: dict[str, Any] = {
        "format": spec.format,
        "layout": spec.layout,
        "metadata": metadata,
        "compression": spec.compression,
        "escape_formulas": spec.csv_formulas == "escape",
    }
    if spec.max_rows_per_file is None:
        return OutputWriter(spec.out, **options)
    return PartWriter(spec.out, max_rows=spec.max_rows_per_file, **options)


def _write_output(
    ctx: RunContext,
    scored: Scored,
    writer: OutputWriter | PartWriter | TableWriter | None,
    sinks: Sequence[RedisSink],
) -> tuple[Staged, dict[str, Any], int]:
    """Write the ranked lists under a temporary name (a table: data files no commit lists yet)
    and load them into each sink; return the output staged, the writer's report and the number
    of missing titles."""
    spec = ctx.spec
    writer = writer or _open_writer(ctx)
    missing_titles = 0
    try:
        for table in scored.topk.results():
            joined, missing = join_titles(table, ctx.titles)
            missing_titles += missing
            writer.write(joined)
            for sink in sinks:
                sink.write(joined)
        staged, written = writer.finish()
        if spec.is_table:  # a table's data files are listed by its commit, not by certificates
            written = {**written, "files": []}
        elif "files" not in written:  # a single file
            written = {**written, "files": [file_entry(spec.out.name, written, spec.layout)]}
        return staged, written, missing_titles
    except BaseException:
        writer.close(commit=False)
        raise


def score_spec(
    spec: ScoreSpec,
    *,
    certificates: Sequence[Certificate] = (),
    publish: RedisTarget | None = None,
) -> dict[str, Any]:
    """Run a validated spec end to end: check, prepare, score, write, then commit as one unit.

    Args:
        certificates: files committed last in the same unit (a job's ``_SUCCESS``).
        publish: a Redis target loaded from the same lists and committed in the unit, after
            the files and before the certificates (default: ``spec.publish``'s).

    Raises:
        LockedError: another run is writing the same output path.
        BatchrankError: a subclass per kind of problem; nothing is published.
    """
    check_output_paths(
        out=spec.out,
        rejects=spec.rejects,
        pairs=spec.pairs,
        model=spec.model,
        items=spec.items,
        users=spec.users,
        inputs=rule_inputs(spec),
        parts=spec.max_rows_per_file is not None,
        table=spec.is_table,
    )
    target = publish if publish is not None else spec.publish_target
    if target is not None:
        from batchrank.sinks.redis import ping

        ping(target)  # a wrong address or password fails before any work
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    ctx = prepare(spec)  # reads only: a bad bundle or input leaves no folder behind
    try:
        with output_lock(spec.out, ctx.run_id):
            clean_spill_leftovers(spec.out)
            return _score_locked(ctx, certificates, target, started, t0)
    finally:
        if ctx.rules is not None:
            ctx.rules.close()  # a spilled exclude set's partition files


def _open_sinks(ctx: RunContext, target: RedisTarget | None) -> list[RedisSink]:
    if target is None:
        return []
    from batchrank.sinks.redis import RedisSink

    return [RedisSink(target, prefix=target.prefix, generation=ctx.run_id)]


def _score_locked(
    ctx: RunContext,
    certificates: Sequence[Certificate],
    target: RedisTarget | None,
    started: dt.datetime,
    t0: float,
) -> dict[str, Any]:
    spec = ctx.spec
    log.info(
        "scoring %s into %s (run %s)",
        "every user x movie" if spec.is_cross_join else f"{len(ctx.files)} input files",
        spec.out,
        ctx.run_id,
        extra={"event": "score_start", "run_id": ctx.run_id},
    )
    scored: Scored | None = None
    staged: list[Staged] = []
    sinks: list[RedisSink] = []
    t_open = time.perf_counter()
    writer = _open_writer(ctx) if spec.is_table else None
    try:
        t1 = time.perf_counter()
        scored = _run_engine(ctx)
        t2 = time.perf_counter()
        _check_rejects(spec, scored.counts)
        sinks = _open_sinks(ctx, target)
        output, written, missing_titles = _write_output(ctx, scored, writer, sinks)
        staged.append(output)
        published: list[tuple[Staged, dict[str, Any]]] = []
        for sink in sinks:
            sink_staged, report = sink.finish()
            staged.append(sink_staged)
            published.append((sink_staged, report))
        sinks = []  # staged: discarding them is the staged objects' part now
        rejects = copy_rejects(scored.rejects, spec.rejects) if spec.rejects is not None else None
        if rejects is not None:
            staged.append(rejects)
            rows = sum(scored.counts.get(k, 0) for k in REJECT_KEYS)
            written = {**written, "rejects_file": rejects_entry(rejects, spec.out, rows)}
        t3 = time.perf_counter()
        timings = {"score_s": t2 - t1, "write_s": t3 - t2, "total_s": time.perf_counter() - t0}
        if writer is not None:
            timings["open_table_s"] = t1 - t_open
        manifest = build_manifest(
            ctx,
            scored,
            written=written,
            missing_titles=missing_titles,
            started=started,
            timings=timings,
            published=[report for _, report in published],
        )
        commit_run(
            output=output,
            output_files=[
                PublishedFile(spec.out.parent / f["path"], f["sha256"], f["bytes"])
                for f in written["files"]
            ],
            rejects=rejects,
            manifest=manifest,
            certificates=certificates,
            sinks=published,
        )
    except BaseException:
        if writer is not None:
            writer.close(commit=False)
        for s in staged:
            s.discard()
        for sink in sinks:
            sink.discard()
        raise
    finally:
        if scored is not None:
            scored.topk.close()
        shutil.rmtree(rejects_spool(ctx), ignore_errors=True)
    if spec.work_dir is not None:
        FragmentStore(spec.work_dir).clear()  # a remote work prefix: committed, so emptied
    log.info(
        "wrote %d users (%d rows) to %s",
        written["users"],
        written["rows"],
        spec.out,
        extra={"event": "score_done", "run_id": ctx.run_id, "counts": manifest["counts"]},
    )
    return manifest
