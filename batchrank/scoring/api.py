"""``batchrank.score``: the Python API of the scorer, for the CLI and for orchestrators."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from batchrank.errors import DataError
from batchrank.scoring.commit import Certificate, commit_run
from batchrank.scoring.engine import Scored
from batchrank.scoring.guards import check_output_paths
from batchrank.scoring.manifest import versions
from batchrank.scoring.predict import round_batch
from batchrank.scoring.prepare import Prepared, prepare
from batchrank.scoring.spec import ScoreSpec
from batchrank.scoring.writers import OutputWriter, join_titles
from batchrank.storage.lock import output_lock

__all__ = ["ScoreSpec", "score", "score_spec"]

log = logging.getLogger("batchrank.score")

REJECT_KEYS = (
    "rejected_null_user_id",
    "rejected_null_movie_id",
    "rejected_bad_user_id",
    "rejected_bad_movie_id",
)


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


def _run_engine(prep: Prepared) -> Scored:
    if prep.spec.engine == "ray":
        from batchrank.scoring.ray_engine import run_ray

        return run_ray(prep)
    from batchrank.scoring.engine import run_local

    return run_local(prep)


def score_spec(spec: ScoreSpec, *, certificates: Sequence[Certificate] = ()) -> dict[str, Any]:
    """Run a validated spec end to end: prepare, score, write, then commit as one unit.

    Args:
        certificates: files written last in the same unit (a job's ``_SUCCESS``).

    Raises:
        LockedError: another run is writing the same output path.
    """
    check_output_paths(
        out=spec.out,
        rejects=spec.rejects,
        pairs=spec.pairs,
        model=spec.model,
        items=spec.items,
        users=spec.users,
    )
    with output_lock(spec.out, spec.run_id or ""):
        return _score_locked(spec, certificates)


def _score_locked(spec: ScoreSpec, certificates: Sequence[Certificate]) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    prep = prepare(spec)
    log.info(
        "scoring %s into %s (run %s)",
        "every user x movie" if spec.is_cross_join else f"{len(prep.files)} input files",
        spec.out,
        prep.run_id,
        extra={"event": "score_start", "run_id": prep.run_id},
    )
    scored: Scored | None = None
    try:
        t1 = time.perf_counter()
        scored = _run_engine(prep)
        t2 = time.perf_counter()
        _check_rejects(spec, scored.counts)
        bundle = prep.bundle
        metadata = {
            "batchrank.model_fingerprint": bundle.fingerprint,
            "batchrank.top_k": str(spec.top_k),
            "batchrank.layout": spec.layout,
            "batchrank.rating_scale": f"{bundle.transform.low:g},{bundle.transform.high:g}",
        }
        assert spec.format is not None
        writer = OutputWriter(
            spec.out,
            format=spec.format,
            layout=spec.layout,
            metadata=metadata,
            compression=spec.compression,
            escape_formulas=spec.csv_formulas == "escape",
        )
        missing_titles = 0
        try:
            for table in scored.topk.results():
                joined, missing = join_titles(table, prep.titles)
                missing_titles += missing
                writer.write(joined)
            staged_out, written = writer.finish()
        except BaseException:
            writer.close(commit=False)
            raise
        t3 = time.perf_counter()
    except BaseException:
        prep.close_rejects(commit=False)
        if scored is not None:
            scored.topk.close()
        raise
    counts = scored.counts
    rejected = {k.removeprefix("rejected_"): counts.get(k, 0) for k in REJECT_KEYS}
    manifest: dict[str, Any] = {
        "batchrank_manifest": 1,
        "run_id": prep.run_id,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "engine": spec.engine,
        "model": {
            "path": str(spec.model),
            "fingerprint": prep.bundle.fingerprint,
            "preset": prep.bundle.metadata.get("preset"),
            "rating_scale": [prep.bundle.transform.low, prep.bundle.transform.high],
        },
        "inputs": (
            [
                {
                    "pairs": "all",
                    "users": len(prep.cross_users or []),
                    "movies": len(prep.bundle.items),
                }
            ]
            if spec.is_cross_join
            else [f.to_manifest() for f in prep.files]
        ),
        "options": {
            "top_k": spec.top_k,
            "format": spec.format,
            "layout": spec.layout,
            "unknown": spec.unknown,
            "chunk_rows": spec.chunk_rows,
            "batch_size": round_batch(spec.batch_size),
            "max_reject_fraction": spec.max_reject_fraction,
            "compression": spec.compression,
            "csv_formulas": spec.csv_formulas,
            "items": str(spec.items) if spec.items else None,
        },
        "counts": {
            "rows_read": counts.get("read", 0),
            "rows_scored": counts.get("kept", 0),
            "rows_skipped_unknown_user": counts.get("unknown_user", 0),
            "rows_skipped_unknown_movie": counts.get("unknown_movie", 0),
            "rows_oov_user": counts.get("oov_user", 0),
            "rows_oov_movie": counts.get("oov_movie", 0),
            "rows_rejected": sum(rejected.values()),
            "rejected_by_reason": rejected,
            "users_written": written["users"],
            "rows_written": written["rows"],
            "missing_titles": missing_titles,
        },
        "resume": {
            "fragments": scored.fragments_total,
            "fragments_resumed": scored.fragments_resumed,
        },
        "topk": scored.topk.stats,
        "output": {
            "path": str(spec.out),
            "bytes": written["bytes"],
            "sha256": written["sha256"],
            "rejects": str(spec.rejects) if spec.rejects else None,
        },
        "timings_s": {
            **{k: round(v, 3) for k, v in prep.timings.items()},
            "score_s": round(t2 - t1, 3),
            "write_s": round(t3 - t2, 3),
            "total_s": round(time.perf_counter() - t0, 3),
        },
        "device": prep.predictor().device if spec.engine == "local" else None,
        "predictor": prep.predictor().path if spec.engine == "local" else None,
        "versions": versions(),
        **spec.extra_manifest,
    }
    try:
        commit_run(
            output=staged_out,
            output_sha256=written["sha256"],
            output_bytes=written["bytes"],
            rejects=prep.finish_rejects(),
            manifest=manifest,
            certificates=certificates,
        )
    finally:
        prep.close_rejects(commit=False)
        scored.topk.close()
    log.info(
        "wrote %d users (%d rows) to %s",
        written["users"],
        written["rows"],
        spec.out,
        extra={"event": "score_done", "run_id": prep.run_id, "counts": manifest["counts"]},
    )
    return manifest
