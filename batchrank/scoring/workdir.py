"""Finished fragments on disk: each fragment's partial top-k, rejects and counts.

With ``--work-dir``, a fragment is recorded as three files, each written atomically:
``fragment-KEY.parquet`` (its partial top-k), ``fragment-KEY.rejects.arrow`` (its rejected rows,
an Arrow IPC stream) and, last, ``fragment-KEY.json`` (its counts and work). A fragment counts
as finished only when all three exist, so a re-run resumes it whole: its lists, its counts and
its rejects. Without a work folder, rejects are spooled the same way, one file per fragment,
into a scratch folder beside the output. Either way the commit step streams the files into the
rejects file in fragment order (:func:`copy_rejects`), so memory does not grow with the number
of rejected rows, and a resumed run writes the rejects file an uninterrupted run writes.

The work folder may be on an object store (``--work-dir s3://b/work/run1``): each file is then
an object published by the object-store storage (uploaded to a staging key, then copied to its
key: never half there), the meta object last, and it also records the other two objects' sizes.
A fragment whose meta object is missing, unreadable, or whose objects' sizes differ from it, is
scored again, never trusted. Its rejects are streamed back from the store at the commit step;
after the run commits, :meth:`FragmentStore.clear` removes the fragments' objects.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.errors import OutputError
from batchrank.fs import filesystem_of, is_remote, open_stream
from batchrank.scoring.rejects import RejectsWriter
from batchrank.scoring.schema import REJECTS_SCHEMA
from batchrank.storage import ANY, Staged, atomic_file
from batchrank.storage.remote import STAGING_DIR
from batchrank.store_errors import remote_reason

__all__ = ["Finished", "FragmentStore", "RejectsPart", "copy_rejects"]

log = logging.getLogger(__name__)


class RejectsPart:
    """One fragment's rejected rows, appended to an Arrow IPC stream published atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._staged: Staged | None = None
        self._sink: Any = None
        self._writer: Any = None

    def write(self, table: pa.Table | None) -> None:
        """Append rejected rows (None or empty: nothing)."""
        if table is None or table.num_rows == 0:
            return
        self._open()
        self._writer.write_table(table.select(REJECTS_SCHEMA.names).cast(REJECTS_SCHEMA))

    def _open(self) -> None:
        if self._writer is not None:
            return
        self._staged = ANY.stage(self.path, "rejects spool")
        self._sink = pa.OSFile(str(self._staged.path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, REJECTS_SCHEMA)

    def commit(self, *, always: bool = False) -> Path | None:
        """Publish the file (with ``always``, an empty one too); None when nothing was written."""
        if self._writer is None and not always:
            return None
        self._open()
        assert self._staged is not None
        self._writer.close()
        self._sink.close()
        self._staged.commit().finalize()
        self._writer = None
        return self.path

    def discard(self) -> None:
        """Drop the temporary file, if any."""
        if self._writer is None or self._staged is None:
            return
        with contextlib.suppress(Exception):
            self._writer.close()
            self._sink.close()
        self._staged.discard()
        self._writer = None


def read_rejects(path: Path) -> Iterator[pa.Table]:
    """The rejected rows of one spooled file (or object), batch by batch."""
    with open_stream(path) if is_remote(path) else pa.OSFile(str(path), "rb") as f:
        for batch in pa.ipc.open_stream(f):
            yield pa.Table.from_batches([batch])


def copy_rejects(parts: Iterable[Path], target: Path) -> Staged:
    """Stream spooled rejects, in order, into the rejects CSV file ``target``, staged for the
    run's commit unit (:func:`batchrank.scoring.commit.commit_run`).

    Raises:
        OutputError: the rejects file cannot be written (it is discarded).
    """
    writer = RejectsWriter(target)
    try:
        for part in parts:
            for table in read_rejects(part):
                writer.write(table)
    except OSError as e:
        writer.close(commit=False)
        raise OutputError(f"{target}: cannot write rejects file ({e.strerror or e})") from e
    except BaseException:
        writer.close(commit=False)
        raise
    return writer.finish()


@dataclass(frozen=True)
class Finished:
    """A fragment recorded in the work folder."""

    partial: pa.Table
    rejects: Path
    counts: dict[str, int]
    work: int


class FragmentStore:
    """The work folder's finished fragments, by key (a local folder or an object-store prefix)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.remote = is_remote(folder)

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        """The partial, rejects and meta files of fragment ``key``."""
        f = self.folder
        return (
            f / f"fragment-{key}.parquet",
            f / f"fragment-{key}.rejects.arrow",
            f / f"fragment-{key}.json",
        )

    def rejects_part(self, key: str) -> RejectsPart:
        """A writer for fragment ``key``'s rejects (committed by :meth:`save`)."""
        if self.remote:
            _, rejects, meta = self.paths(key)
            _delete_object(meta)  # a fragment being redone is unfinished until its new meta
            return RejectsPart(rejects)
        self.folder.mkdir(parents=True, exist_ok=True)
        return RejectsPart(self.paths(key)[1])

    def load(self, key: str) -> Finished | None:
        """Fragment ``key`` when all its files exist, else None."""
        if self.remote:
            return self._load_remote(key)
        data, rejects, meta = self.paths(key)
        if not (data.exists() and rejects.exists() and meta.exists()):
            return None
        info = json.loads(meta.read_text())
        return Finished(
            partial=pq.read_table(data),
            rejects=rejects,
            counts={k: int(v) for k, v in info["counts"].items()},
            work=int(info.get("work", 0)),
        )

    def _load_remote(self, key: str) -> Finished | None:
        """Fragment ``key`` from the object store when its meta object vouches for the others;
        anything missing, truncated or unreadable: None (the fragment is scored again)."""
        data, rejects, meta = self.paths(key)
        try:
            with open_stream(meta) as f:  # type: ignore[arg-type]
                info = json.loads(f.read().decode())
            sizes = info["bytes"]
            for path in (data, rejects):
                if path.stat().st_size != int(sizes[path.name]):
                    raise ValueError(f"{path.name} is not the size its meta object records")
            fs, p = filesystem_of(data)  # type: ignore[arg-type]
            partial = pq.read_table(p, filesystem=fs)
            counts = {k: int(v) for k, v in info["counts"].items()}
        except FileNotFoundError:  # not finished: no meta object yet (or its data went)
            return None
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as e:
            log.warning(
                "fragment %s in %s is incomplete (%s); scoring it again",
                key,
                self.folder,
                remote_reason(e) if isinstance(e, OSError) else e,
                extra={"event": "fragment_redone"},
            )
            return None
        return Finished(partial=partial, rejects=rejects, counts=counts, work=int(info["work"]))

    def save(
        self, key: str, partial: pa.Table, rejects: RejectsPart, counts: dict[str, int], work: int
    ) -> Path:
        """Record a finished fragment: partial, then rejects, then the meta file, last."""
        data, _, meta = self.paths(key)
        with atomic_file(data, "work file") as tmp:
            pq.write_table(partial, tmp)
            size = tmp.stat().st_size
        path = rejects.commit(always=True)
        assert path is not None
        info: dict[str, Any] = {"counts": dict(counts), "work": work}
        if self.remote:  # the sizes the objects must have to be trusted on resume
            info["bytes"] = {data.name: size, path.name: path.stat().st_size}
        with atomic_file(meta, "work file") as tmp:
            tmp.write_text(json.dumps(info))
        return path

    def clear(self) -> None:
        """Remove every fragment's objects (a remote work folder, once its run committed)."""
        if not self.remote:
            return
        try:
            for path, _ in self.folder.iter_files():  # type: ignore[attr-defined]
                if path.name.startswith("fragment-") or STAGING_DIR in path.parts:
                    _delete_object(path)
        except OSError as e:  # the export is committed: a leftover costs storage, not safety
            log.warning(
                "cannot remove the finished fragments in %s (%s); delete them by hand",
                self.folder,
                remote_reason(e),
                extra={"event": "work_not_removed"},
            )


def _delete_object(path: Path) -> None:
    """Delete one object, absent or not."""
    fs, p = filesystem_of(path)  # type: ignore[arg-type]
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(p)
