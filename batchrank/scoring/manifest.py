"""The run manifest, ``<out>.manifest.json``, written last and atomically.

``files`` lists every data file of the output (the file itself, or each part of a folder of
parts, in order) with its ``path`` relative to the manifest's folder, ``bytes``, ``rows``,
``users`` and ``sha256``; ``rejects_file`` lists the rejects file likewise (without users).
``output`` keeps the summary keys it always had (for a folder, ``bytes`` is the parts' total
and ``sha256`` the digest of their ``sha256sum`` listing).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import posixpath
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrank.fs import is_remote, redact
from batchrank.storage import Staged, sha256_file

if TYPE_CHECKING:
    from batchrank.scoring.context import RunContext
    from batchrank.scoring.engine import Scored

__all__ = ["REJECT_KEYS", "build_manifest", "rejects_entry", "versions"]

REJECT_KEYS = (
    "rejected_null_user_id",
    "rejected_null_movie_id",
    "rejected_bad_user_id",
    "rejected_bad_movie_id",
)
"""Count keys of rejected rows, one per reason."""


def rejects_entry(rejects: Staged, out: Path, rows: int) -> dict[str, Any]:
    """The staged rejects file as the manifest lists it: ``path`` (relative to the manifest's
    folder), ``bytes``, ``rows`` (rejected rows) and ``sha256``."""
    digest, size = sha256_file(rejects.path)
    if is_remote(rejects.target) or is_remote(out):  # URIs: relative as text, no local I/O
        path = posixpath.relpath(str(rejects.target), str(out.parent))
    else:
        path = Path(os.path.relpath(rejects.target, out.parent)).as_posix()
    return {"path": path, "bytes": size, "rows": rows, "sha256": digest}


def versions() -> dict[str, str]:
    """Versions of batchrank and the libraries that shape its output.

    Read from the installed distributions' metadata, so recording them imports nothing (the
    scorer never imports Keras: that alone cost ~4 s of a cold start).
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("batchrank", "keras", "jax", "jaxlib", "polars", "pyarrow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _counts(counts: Counter[str], written: dict[str, Any], missing_titles: int) -> dict[str, Any]:
    rejected = {k.removeprefix("rejected_"): counts.get(k, 0) for k in REJECT_KEYS}
    return {
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
    }


def build_manifest(
    ctx: RunContext,
    scored: Scored,
    *,
    written: dict[str, Any],
    missing_titles: int,
    started: dt.datetime,
    timings: dict[str, float],
    published: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The manifest of a committed run.

    Args:
        ctx: the run.
        scored: the engine's result.
        written: what the output writer reported (``users``, ``rows``, ``bytes``, ``sha256``,
            ``files``; a folder of parts adds ``parts``).
        missing_titles: output rows without a title.
        started: when the run started (UTC).
        timings: seconds per phase, added to the preparation's.
        published: what each sink staged (Redis: the generation, key count and bytes).
    """
    from batchrank.scoring.predict import round_batch
    from batchrank.scoring.rules import rule_counts

    spec, bundle = ctx.spec, ctx.bundle
    if spec.is_cross_join:
        users = len(ctx.cross_users) if ctx.cross_users is not None else 0
        inputs: list[Any] = [{"pairs": "all", "users": users, "movies": len(bundle.items)}]
    else:
        inputs = [f.to_manifest() for f in ctx.files]
    return {
        "batchrank_manifest": 1,
        "run_id": ctx.run_id,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "engine": spec.engine,
        "model": {
            "path": redact(str(spec.model)),
            "fingerprint": bundle.fingerprint,
            "preset": bundle.metadata.get("preset"),
            "rating_scale": [bundle.transform.low, bundle.transform.high],
        },
        "inputs": inputs,
        "options": {
            "top_k": spec.top_k,
            "format": spec.format,
            "layout": spec.layout,
            "unknown": spec.unknown,
            "chunk_rows": spec.chunk_rows,
            "batch_size": round_batch(spec.batch_size),
            "max_reject_fraction": spec.max_reject_fraction,
            "compression": spec.compression,
            "max_rows_per_file": spec.max_rows_per_file,
            "csv_formulas": spec.csv_formulas,
            "precision": spec.precision,
            "items": redact(str(spec.items)) if spec.items else None,
        },
        "counts": _counts(scored.counts, written, missing_titles),
        "rules": {
            **(ctx.rules.summary if ctx.rules is not None else {}),
            "rows_removed": rule_counts(scored.counts),
        },
        "resume": {
            "fragments": scored.fragments_total,
            "fragments_resumed": scored.fragments_resumed,
        },
        "topk": scored.topk.stats,
        "output": {
            "path": redact(str(spec.out)),
            "bytes": written["bytes"],
            "sha256": written["sha256"],
            "parts": written.get("parts"),
            "rejects": redact(str(spec.rejects)) if spec.rejects else None,
            # a lake table: format, partition, the Delta version or Iceberg snapshot id, files
            **({"table": written["table"]} if "table" in written else {}),
        },
        "files": written["files"],
        "rejects_file": written.get("rejects_file"),
        **({"publish": {"redis": published[0]}} if published else {}),
        "timings_s": {k: round(v, 3) for k, v in {**ctx.timings, **timings}.items()},
        "device": scored.device,
        "predictor": scored.predictor,
        "versions": versions(),
        **spec.extra_manifest,
    }
