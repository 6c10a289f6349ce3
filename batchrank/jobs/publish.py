"""Publishing a committed export for downstream systems: ``_SUCCESS`` and ``latest``.

Order of a run, so that a consumer never reads a half-written export:

1. the scorer writes the output, the rejects file and the manifest under temporary names;
   nothing at the final paths changes while it works, so a failed run leaves the previous
   export, its ``_SUCCESS`` and ``latest`` as they were;
2. the commit is one unit (:class:`batchrank.storage.CommitUnit`): the old manifest and
   ``_SUCCESS`` are moved aside, the rejects file and the output are renamed into place, then
   the new manifest and ``_SUCCESS`` (:func:`stage_success`: the files with their sizes and
   sha256, the convention of Spark and Hadoop output committers). A failure at any step rolls
   every rename back;
3. :func:`update_latest` points the ``latest`` file at the new output, by an atomic rename.

A consumer waits for ``_SUCCESS`` in a dated folder (and may check each file's sha256 against
it), or reads ``latest`` (one line: the newest output's path relative to the pointer's folder)
and then that output.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from batchrank.errors import OutputError
from batchrank.fs import is_remote
from batchrank.scoring.commit import Certificate, PublishedFile, manifest_path_of
from batchrank.storage import ANY, Staged, atomic_file
from batchrank.uris import to_path, uri_scheme

__all__ = [
    "SUCCESS_NAME",
    "read_latest",
    "stage_success",
    "success_certificate",
    "success_entry",
    "update_latest",
]

log = logging.getLogger("batchrank.jobs")

SUCCESS_NAME = "_SUCCESS"
"""The marker's file name."""


def _relative(path: Path, folder: Path) -> str:
    if is_remote(path) or is_remote(folder):
        if str(path).startswith(str(folder).rstrip("/") + "/"):
            return str(path)[len(str(folder).rstrip("/")) + 1 :]
        return str(path)  # elsewhere (another bucket): the whole URI
    return Path(os.path.relpath(path, folder)).as_posix()


def success_entry(path: Path, folder: Path, *, sha256: str, size: int) -> dict[str, Any]:
    """One file of ``_SUCCESS``: its path relative to the marker's folder, size and sha256."""
    return {"path": _relative(path, folder), "bytes": size, "sha256": sha256}


def stage_success(
    folder: Path,
    entries: Sequence[dict[str, Any]],
    *,
    job: str,
    date: dt.date,
    run_id: str,
    sinks: Sequence[Mapping[str, Any]] = (),
) -> Staged:
    """Write ``folder/_SUCCESS`` under a temporary name; the caller commits it.

    Args:
        entries: from :func:`success_entry`, one per committed file.
        sinks: the reports of the sinks published in the same unit (a Redis generation).
    """
    record: dict[str, Any] = {
        "batchrank_success": 1,
        "job": job,
        "date": date.isoformat(),
        "run_id": run_id,
        "committed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": list(entries),
        "sinks": ["files", *(("redis",) if sinks else ())],
        **({"redis": dict(sinks[0])} if sinks else {}),
    }
    staged = ANY.stage(folder / SUCCESS_NAME, "success marker")
    try:
        staged.path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        staged.discard()
        raise OutputError(f"{folder / SUCCESS_NAME}: cannot write ({e.strerror})") from e
    return staged


def success_certificate(folder: Path, *, job: str, date: dt.date, run_id: str) -> Certificate:
    """``folder/_SUCCESS`` as the last file of a run's commit unit, listing the unit's files."""

    def make(published: Sequence[PublishedFile], sinks: Sequence[Mapping[str, Any]]) -> Staged:
        entries = [success_entry(f.path, folder, sha256=f.sha256, size=f.bytes) for f in published]
        return stage_success(folder, entries, job=job, date=date, run_id=run_id, sinks=sinks)

    return Certificate(folder / SUCCESS_NAME, make)


def read_latest(pointer: Path) -> Path | None:
    """The output a ``latest`` pointer names (absolute), or None when absent or unreadable."""
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text:
        return None
    if uri_scheme(text) is not None:
        return to_path(text)
    return (pointer.parent / text).resolve()


def _date_of(output: Path) -> str | None:
    """The run date recorded in an output's manifest, if readable."""
    manifest = manifest_path_of(output)
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
    with atomic_file(pointer, "latest pointer") as tmp:
        tmp.write_text(_relative(output, pointer.parent) + "\n", encoding="utf-8")
    return True
