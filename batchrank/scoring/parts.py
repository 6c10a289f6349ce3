"""Partitioned output: a folder of part files, users never split, rows globally sorted by user.

With ``--max-rows-per-file N`` the output ``top10.parquet`` is a folder::

    top10.parquet/
        .batchrank-parts.json   marks the folder as batchrank's (hidden: loaders skip it)
        part-00000.parquet
        part-00001.parquet

Each part is a file :class:`~batchrank.scoring.writers.OutputWriter` writes (the same format,
compression, row groups and footer metadata as a single output). :class:`PartWriter` decides
where a part ends from the rows alone: a part takes whole users while they fit in N rows (a
user whose list alone exceeds N gets a part to itself), so the parts are the same whatever
tables the rows arrive in, whatever the chunk size, batch size or engine. Concatenated in order,
the parts hold exactly the rows of the single file.

The folder is staged by the storage (:meth:`batchrank.storage.base.Storage.stage_parts`) and
committed with the manifest as one unit (:func:`batchrank.scoring.commit.commit_run`). On an
object store, where a folder cannot be swapped, each version's parts carry the digest of their
listing (``part-00000-<12 hex>.parquet``: same bytes, same names) and are published beside the
previous version's, which stay readable until the new manifest replaces theirs
(:mod:`batchrank.storage.remote`); on local disk the names and bytes are as above.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from batchrank.errors import BatchrankError, ConfigError, OutputError
from batchrank.formats import Compression, Layout, OutputFormat, output_kind_of
from batchrank.fs import ObjectPath, is_remote, local_or_remote
from batchrank.scoring.row_groups import run_starts
from batchrank.scoring.writers import OutputWriter
from batchrank.storage import ANY, Staged, Storage, check_target
from batchrank.storage.local import os_reason
from batchrank.store_errors import remote_reason

__all__ = [
    "PART_MARKER",
    "VERSION_CHARS",
    "PartWriter",
    "check_part_folder",
    "file_entry",
    "is_part_folder",
    "list_parts",
    "listing_sha256",
    "part_name",
    "part_path",
]

PART_MARKER = ".batchrank-parts.json"
"""The file that marks a folder of parts as batchrank's (a run may replace such a folder)."""

_PART = re.compile(r"part-(\d{5,})(?:-[0-9a-f]{12})?\.")
VERSION_CHARS = 12
"""Hex digits of the listing digest in an object store's part names."""


def part_name(index: int, suffix: str, version: str = "") -> str:
    """The name of the ``index``-th part: ``part-00000.parquet``; on an object store with the
    version's digest, ``part-00000-<version>.parquet``."""
    return f"part-{index:05d}{'-' + version if version else ''}{suffix}"


def _suffix(out: Path) -> str:
    """A part's suffix: the output name's format suffix, and compression suffix if any, in
    lower case (``top.csv.gz`` gives ``.csv.gz``)."""
    kind = output_kind_of(out)
    compressed = kind is not None and kind.compression is not None
    return "".join(out.suffixes[-2:] if compressed else out.suffixes[-1:]).lower()


def part_path(out: Path, index: int = 0) -> Path:
    """The ``index``-th part of the folder ``out`` (``top.csv.gz/part-00000.csv.gz``)."""
    return out / part_name(index, _suffix(out))


def is_part_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of parts batchrank wrote (it holds :data:`PART_MARKER`)."""
    return path.is_dir() and not path.is_symlink() and (path / PART_MARKER).is_file()


def list_parts(folder: Path) -> list[Path]:
    """The part files in ``folder``, in order (by number: ``part-100000`` after ``part-99999``).

    On an object store, read the parts its manifest lists: between a killed commit and the
    next run the folder may also hold parts of another version."""
    found = []
    names = [p.name for p in folder.iterdir()] if is_remote(folder) else os.listdir(folder)
    for name in names:
        m = _PART.match(name)
        if m:
            found.append((int(m.group(1)), name))
    return [folder / name for _, name in sorted(found)]


def check_part_folder(
    out: Path, what: str = "--out", error: type[BatchrankError] = ConfigError
) -> None:
    """Refuse an output folder a run must not replace: a file, a link, or someone else's folder.

    Absent, empty, or holding :data:`PART_MARKER` is fine: the run replaces it whole.

    Raises:
        ConfigError: (or ``error``) naming the path and what it is.
    """
    out = local_or_remote(Path(out))
    if is_remote(out):
        _check_remote_folder(out, what, error)
        return
    if os.path.isfile(out) and not os.path.islink(out):
        raise error(
            f"{what} {out} is a file; with max_rows_per_file (--max-rows-per-file) the output "
            "is a folder of part files: remove the file or give another output path"
        )
    check_target(out, what, error, folder=True)
    if not os.path.isdir(out) or is_part_folder(out):
        return
    try:
        empty = not os.listdir(out)
    except OSError as e:
        raise OutputError(f"{out}: cannot list the output folder ({os_reason(e)})") from e
    if not empty:
        raise error(
            f"{what} {out} is a folder batchrank did not write (no {PART_MARKER} in it); a run "
            "replaces the whole folder, so it refuses to: give another output path or empty it"
        )


def _check_remote_folder(out: ObjectPath, what: str, error: type[BatchrankError]) -> None:
    """:func:`check_part_folder` for a prefix of an object store."""
    try:
        if out.is_file():
            raise error(
                f"{what} {out.display()} is an object; with max_rows_per_file "
                "(--max-rows-per-file) the output is a folder of part files: delete the object "
                "or give another output path"
            )
        if not out.is_dir() or (out / PART_MARKER).is_file():
            return
        empty = not any(True for _ in out.iterdir())
    except OSError as e:
        reason = remote_reason(e)
        raise OutputError(f"{out.display()}: cannot list the output folder ({reason})") from e
    if not empty:
        raise error(
            f"{what} {out.display()} holds objects batchrank did not write (no {PART_MARKER} "
            "in it); a run replaces the whole folder, so it refuses to: give another output "
            "path or empty it"
        )


def file_entry(path: str, summary: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """A data file as the manifest lists it: ``path`` (relative to the manifest's folder),
    ``bytes``, ``rows`` (as a reader counts them: one per user in the nested layout),
    ``users`` and ``sha256``."""
    rows = summary["users"] if layout == "nested" else summary["rows"]
    return {
        "path": path,
        "bytes": summary["bytes"],
        "rows": rows,
        "users": summary["users"],
        "sha256": summary["sha256"],
    }


def listing_sha256(entries: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of a folder's ``sha256sum part-*`` listing (``<sha256>  <name>`` lines, in order):
    one digest that changes when any part's bytes do."""
    lines = "".join(f"{e['sha256']}  {Path(e['path']).name}\n" for e in entries)
    return hashlib.sha256(lines.encode()).hexdigest()


class PartWriter:
    """Write ranked rows as a folder of part files of at most ``max_rows`` rows each.

    The same interface as :class:`~batchrank.scoring.writers.OutputWriter`: :meth:`write`
    sorted rows, then :meth:`finish` (the staged folder, for the caller's commit) or
    ``close(commit=False)``.
    """

    def __init__(
        self,
        out: Path,
        *,
        max_rows: int,
        format: OutputFormat,
        layout: Layout,
        metadata: Mapping[str, str] | None = None,
        compression: Compression = None,
        escape_formulas: bool = True,
        storage: Storage = ANY,
    ) -> None:
        """Stage the output folder (see :class:`~batchrank.scoring.writers.OutputWriter` for
        the arguments they share).

        Raises:
            OutputError: the folder cannot be staged, or ``out`` is not a folder batchrank may
                replace.
        """
        if max_rows < 1:
            raise ConfigError(f"max_rows_per_file must be at least 1; received {max_rows}")
        self.out = local_or_remote(Path(out))
        self.max_rows = max_rows
        self.layout: Layout = layout
        self._options: dict[str, Any] = {
            "format": format,
            "layout": layout,
            "metadata": metadata,
            "compression": compression,
            "escape_formulas": escape_formulas,
        }
        check_part_folder(self.out, "output", OutputError)
        self._staged: Staged = storage.stage_parts(self.out, "output")
        self._folder = self._staged.path
        self._writer: OutputWriter | None = None
        self._part_rows = 0
        self._pending: pa.Table | None = None
        self._entries: list[dict[str, Any]] = []
        self._totals = {"rows": 0, "users": 0, "bytes": 0}
        self._closed = False

    # -- placing users into parts ------------------------------------------------------------

    def write(self, table: pa.Table) -> None:
        """Append ranked rows (sorted by user, as from ``join_titles``).

        Raises:
            OutputError: a part cannot be written (the staged folder is removed).
        """
        if self._closed:
            raise OutputError(f"{self.out}: writer already closed")
        if table.num_rows == 0:
            return
        try:
            if self._pending is not None:
                table = pa.concat_tables([self._pending, table], promote_options="permissive")
            starts = run_starts(table.column("user_id"))
            # the last user may go on in the next table: hold it back until then
            last = int(starts[-1])
            self._pending = table.slice(last)
            self._place(table.slice(0, last), starts[:-1])
        except BaseException:
            self._abort()
            raise

    def _place(self, table: pa.Table, starts: np.ndarray) -> None:
        """Put whole users into parts: a part takes users while they fit (greedy, in order)."""
        n = len(starts)
        if n == 0:
            return
        ends = np.append(starts[1:], table.num_rows)
        weights = ends - starts if self.layout == "long" else np.ones(n, np.int64)
        cum = np.concatenate([[0], np.cumsum(weights)])
        p = 0
        while p < n:
            room = self.max_rows - self._part_rows
            q = max(p, int(np.searchsorted(cum, cum[p] + room, side="right")) - 1)
            if q == p:
                if self._part_rows:
                    self._roll()
                    continue
                q = p + 1  # one user's list alone exceeds the limit: a part of its own
            lo, hi = int(starts[p]), int(ends[q - 1])
            self._current().write(table.slice(lo, hi - lo))
            self._part_rows += int(cum[q] - cum[p])
            p = q
            if p < n:
                self._roll()

    def _current(self) -> OutputWriter:
        if self._writer is None:
            name = part_path(self.out, len(self._entries)).name
            self._writer = OutputWriter(self._folder / name, **self._options)
        return self._writer

    def _roll(self) -> None:
        """Finish the open part (inside the staged folder); the next rows open a new one."""
        writer, self._writer = self._writer, None
        self._part_rows = 0
        if writer is None:
            return
        staged, summary = writer.finish()
        staged.commit().finalize()
        path = f"{self.out.name}/{writer.out.name}"
        self._entries.append(file_entry(path, summary, self.layout))
        for key in self._totals:
            self._totals[key] += summary[key]

    # -- finishing ----------------------------------------------------------------------------

    def finish(self) -> tuple[Staged, dict[str, Any]]:
        """Write the last part and the marker; return the staged folder and a summary.

        Returns:
            The staged folder and ``path``, ``rows`` (recommendations), ``users``, ``bytes``
            (of all parts), ``sha256`` (:func:`listing_sha256`), ``parts`` and ``files`` (one
            :func:`file_entry` per part, in order).
        """
        if self._closed:
            raise OutputError(f"{self.out}: writer already closed")
        try:
            if self._pending is not None:
                pending, self._pending = self._pending, None
                self._place(pending, run_starts(pending.column("user_id")))
            if not self._entries:
                self._current()  # no rows: one empty part, which still carries the schema
            self._roll()
            if is_remote(self.out):
                self._version_names()
            self._write_marker()
            check_part_folder(self.out, "output", OutputError)  # it may have changed meanwhile
        except BaseException:
            self._abort()
            raise
        self._closed = True
        summary = {
            "path": str(self.out),
            **self._totals,
            "sha256": listing_sha256(self._entries),
            "parts": len(self._entries),
            "files": list(self._entries),
        }
        return self._staged, summary

    def _version_names(self) -> None:
        """Name the parts by their listing's digest (object stores: module docstring)."""
        version = listing_sha256(self._entries)[:VERSION_CHARS]
        for i, entry in enumerate(self._entries):
            local = self._folder / Path(entry["path"]).name
            name = part_name(i, _suffix(self.out), version)
            try:
                local.rename(self._folder / name)
            except OSError as e:
                raise OutputError(f"{self.out}: cannot name part {name} ({os_reason(e)})") from e
            entry["path"] = f"{self.out.name}/{name}"

    def _write_marker(self) -> None:
        record = {
            "batchrank_parts": 1,
            "format": self._options["format"],
            "layout": self.layout,
            "max_rows_per_file": self.max_rows,
            "parts": len(self._entries),
        }
        path = self._folder / PART_MARKER
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise OutputError(f"{self.out}: cannot write {PART_MARKER} ({os_reason(e)})") from e

    def close(self, commit: bool) -> dict[str, Any]:
        """Publish the folder alone (``commit=True``) or drop it; return the summary."""
        if not commit:
            self._abort()
            return {"path": str(self.out), "rows": 0, "users": 0, "sha256": None, "bytes": 0}
        staged, summary = self.finish()
        staged.commit().finalize()
        return summary

    def _abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close(commit=False)
        self._staged.discard()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self._abort()
