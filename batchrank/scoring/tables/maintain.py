"""Keeping a nightly table bounded: compaction, expiry of old versions, removal of orphans.

- Delta: ``optimize.compact`` (small files of a partition merged; a commit with
  ``dataChange=false``), then ``vacuum(full=True)``: files no version within the retention
  needs, and data files of killed runs (never in the log), older than the retention, are
  deleted; then expired log entries (``delta.logRetentionDuration``) are cleaned up.
- Iceberg: ``expire_snapshots().older_than(...)`` (the current snapshot always stays), then the
  files under the table's ``data/`` and ``metadata/`` that no remaining snapshot or metadata
  version references, older than the retention, are deleted (pyiceberg 0.12 has no
  ``remove_orphan_files`` or data-file compaction; Spark's ``rewrite_data_files`` procedure
  compacts, see docs/tables.md). A batchrank run writes one partition in files of about 1M
  rows, so there is little to compact.

Time travel: after maintenance, versions or snapshots older than the retention can no longer
be read. The caller holds the table's output lock, so no batchrank run writes meanwhile.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow.fs as pafs

from batchrank.scoring.tables.store import filesystem, fs_path
from batchrank.scoring.tables.target import TableTarget, table_error

__all__ = ["maintain"]


def maintain(target: TableTarget, *, retain_days: float, dry_run: bool = False) -> dict[str, Any]:
    """Compact and expire the target's table; return what was done (for printing as JSON).

    Raises:
        OutputError: there is no table of the format there, or a step fails.
    """
    if target.format == "delta":
        return _delta(target, retain_days, dry_run)
    return _iceberg(target, retain_days, dry_run)


def _delta(target: TableTarget, retain_days: float, dry_run: bool) -> dict[str, Any]:
    from deltalake import CommitProperties

    from batchrank.scoring.tables.delta import open_delta

    table = open_delta(target)
    if table is None:
        raise table_error(target, "no Delta table here to maintain")
    report: dict[str, Any] = {"format": "delta", "location": target.location}
    try:
        if not dry_run:
            props = CommitProperties(custom_metadata={"batchrank.maintenance": "compact"})
            metrics = table.optimize.compact(commit_properties=props)
            report["compacted"] = {
                k: metrics.get(k)
                for k in ("numFilesAdded", "numFilesRemoved", "partitionsOptimized")
            }
        removed = table.vacuum(
            retention_hours=max(0, int(retain_days * 24)),
            dry_run=dry_run,
            enforce_retention_duration=False,
            full=True,
        )
        report["files_removed" if not dry_run else "files_to_remove"] = sorted(removed)
        if not dry_run:
            table.cleanup_metadata()
        report["version"] = table.version()
    except Exception as e:
        raise table_error(target, "maintenance failed", e) from e
    return report


def _iceberg(target: TableTarget, retain_days: float, dry_run: bool) -> dict[str, Any]:
    from batchrank.scoring.tables.iceberg import load_table, open_catalog

    table = load_table(target, open_catalog(target))
    if table is None:
        raise table_error(target, "no Iceberg table here to maintain (in its catalog)")
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=retain_days)
    report: dict[str, Any] = {"format": "iceberg", "location": target.location}
    try:
        before = {s.snapshot_id for s in table.snapshots()}
        current = table.current_snapshot()
        old = [
            s.snapshot_id
            for s in table.snapshots()
            if s.timestamp_ms < cutoff.timestamp() * 1000
            and (current is None or s.snapshot_id != current.snapshot_id)
        ]
        if old and not dry_run:
            table.maintenance.expire_snapshots().by_ids(old).commit()
            table = table.refresh()
        report["snapshots_expired"] = old
        report["snapshots_kept"] = len(before) - (0 if dry_run else len(old))
        orphans = _iceberg_orphans(table, cutoff)
        if not dry_run:
            fs, _ = filesystem(target.location)
            for path in orphans:
                fs.delete_file(path)
        report["files_removed" if not dry_run else "files_to_remove"] = orphans
    except Exception as e:
        raise table_error(target, "maintenance failed", e) from e
    return report


def _iceberg_orphans(table: Any, cutoff: dt.datetime) -> list[str]:
    """Files under the table's folder that nothing the table's metadata reaches names."""

    keep = {fs_path(table.metadata_location)}
    keep.update(fs_path(e.metadata_file) for e in table.metadata.metadata_log)
    for snap in table.snapshots():
        keep.add(fs_path(snap.manifest_list))
    keep.update(fs_path(p) for p in table.inspect.all_manifests().column("path").to_pylist())
    keep.update(fs_path(p) for p in table.inspect.all_files().column("file_path").to_pylist())
    fs, root = filesystem(table.location().removeprefix("file://"))
    out = []
    for sub in ("data", "metadata"):
        selector = pafs.FileSelector(f"{root}/{sub}", recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type != pafs.FileType.File or info.path in keep:
                continue
            if info.mtime is not None and info.mtime.timestamp() >= cutoff.timestamp():
                continue  # a run in progress elsewhere, or too recent to judge
            out.append(info.path)
    return sorted(out)
