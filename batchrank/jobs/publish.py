"""Publishing a committed export for downstream systems: ``_SUCCESS`` and ``latest``.

Order of a run, so that a consumer never reads a half-written export:

1. before scoring, :func:`clear_success` removes an earlier ``_SUCCESS`` from the output folder
   (the export there is about to be replaced);
2. the scorer commits the output file, then its manifest (each by an atomic rename);
3. :func:`write_success` writes ``_SUCCESS``, listing the files with their sizes and sha256
   (the convention of Spark and Hadoop output committers), by an atomic rename;
4. :func:`update_latest` points the ``latest`` file at the new output, by an atomic rename.

A consumer waits for ``_SUCCESS`` in a dated folder, or reads ``latest`` (one line: the newest
output's path relative to the pointer's folder) and then that output.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchrank.atomic import atomic_file, fsync_dir
from batchrank.errors import OutputError

__all__ = [
    "SUCCESS_NAME",
    "clear_success",
    "read_latest",
    "sha256_of",
    "update_latest",
    "write_success",
]

log = logging.getLogger("batchrank.jobs")

SUCCESS_NAME = "_SUCCESS"
"""The marker's file name."""


def sha256_of(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(path, folder)).as_posix()


def clear_success(folder: Path) -> bool:
    """Remove ``folder/_SUCCESS`` before its export is replaced; return whether it existed."""
    marker = folder / SUCCESS_NAME
    try:
        marker.unlink()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise OutputError(
            f"{marker}: cannot remove the earlier success marker ({e.strerror})"
        ) from e
    fsync_dir(folder)
    return True


def write_success(
    folder: Path, files: Sequence[Path], *, job: str, date: dt.date, run_id: str
) -> Path:
    """Write ``folder/_SUCCESS`` listing ``files`` (relative to ``folder`` where inside it).

    Returns:
        The marker's path.
    """
    entries = [
        {"path": _relative(f, folder), "bytes": f.stat().st_size, "sha256": sha256_of(f)}
        for f in files
    ]
    record: dict[str, Any] = {
        "batchrank_success": 1,
        "job": job,
        "date": date.isoformat(),
        "run_id": run_id,
        "committed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": entries,
    }
    marker = folder / SUCCESS_NAME
    with atomic_file(marker) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return marker


def read_latest(pointer: Path) -> Path | None:
    """The output a ``latest`` pointer names (absolute), or None when absent or unreadable."""
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text:
        return None
    return (pointer.parent / text).resolve()


def _date_of(output: Path) -> str | None:
    """The run date recorded in an output's manifest, if readable."""
    manifest = output.with_name(output.name + ".manifest.json")
    try:
        job = json.loads(manifest.read_text(encoding="utf-8")).get("job", {})
    except (OSError, ValueError, AttributeError):
        return None
    date = job.get("date") if isinstance(job, dict) else None
    return date if isinstance(date, str) else None


def update_latest(pointer: Path, output: Path, *, date: dt.date) -> bool:
    """Point ``latest`` at ``output``, atomically, unless it names a later date already.

    A backfill (a run for an earlier date) leaves the pointer on the newer export.

    Returns:
        Whether the pointer now names ``output``.
    """
    current = read_latest(pointer)
    if current is not None and current != output.resolve():
        current_date = _date_of(current)
        if current_date is not None and current_date > date.isoformat():
            log.info(
                "kept %s on %s (dated %s, later than this run's %s)",
                pointer,
                current,
                current_date,
                date.isoformat(),
                extra={"event": "latest_kept"},
            )
            return False
    with atomic_file(pointer) as tmp:
        tmp.write_text(_relative(output, pointer.parent) + "\n", encoding="utf-8")
    return True
