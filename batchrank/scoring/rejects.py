"""The rejects file: rows the id stage refused, appended to a CSV file published atomically."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

from batchrank.errors import OutputError
from batchrank.fs import local_or_remote
from batchrank.scoring.ids import REJECTS_SCHEMA
from batchrank.storage import ANY, Staged, Storage

__all__ = ["RejectsWriter"]


class RejectsWriter:
    """Appends rejects tables to a CSV file, published atomically.

    The file (header ``file,row,user_id,movie_id,reason``; null ids are empty fields, text is
    quoted) is staged under a temporary name beside ``path`` and published by
    ``close(commit=True)`` (or committed with the output as one unit: :meth:`finish`);
    ``close(commit=False)`` deletes it. As a context manager it commits on success and
    discards on an exception.
    """

    def __init__(self, path: Path, storage: Storage = ANY) -> None:
        """Start a rejects file at ``path`` (created, or replaced on commit).

        Raises:
            OutputError: the folder cannot be created or written.
        """
        self.path = local_or_remote(Path(path))
        self.rows = 0
        self._staged: Staged | None = storage.stage(self.path, "rejects")
        self._file: BinaryIO | None = None
        try:
            self._file = self._staged.path.open("wb")
            self._file.write(",".join(REJECTS_SCHEMA.names).encode() + b"\n")
        except OSError as e:
            self.close(commit=False)
            raise OutputError(f"{self.path}: cannot write rejects file ({e.strerror})") from e

    def write(self, rejects: pa.Table | None) -> None:
        """Append rejected rows (a table with :data:`REJECTS_SCHEMA`'s columns); None is a no-op.

        Raises:
            OutputError: the write fails.
        """
        if rejects is None or rejects.num_rows == 0:
            return
        if self._file is None:
            raise ValueError(f"{self.path}: rejects writer is closed")
        table = rejects.select(REJECTS_SCHEMA.names).cast(REJECTS_SCHEMA)
        try:
            pacsv.write_csv(
                table, self._file, write_options=pacsv.WriteOptions(include_header=False)
            )
        except OSError as e:
            raise OutputError(f"{self.path}: cannot write rejects file ({e.strerror})") from e
        self.rows += table.num_rows

    def finish(self) -> Staged:
        """Close the file without publishing it; the caller commits the staged file.

        Raises:
            OutputError: the file cannot be flushed (it is discarded).
        """
        file, self._file = self._file, None
        staged, self._staged = self._staged, None
        if staged is None:
            raise ValueError(f"{self.path}: rejects writer is closed")
        try:
            if file is not None:
                file.close()
        except OSError as e:
            staged.discard()
            raise OutputError(f"{self.path}: cannot write rejects file ({e.strerror})") from e
        return staged

    def close(self, *, commit: bool = True) -> None:
        """Publish the file (``commit=True``) or delete it; later calls do nothing.

        Raises:
            OutputError: the file cannot be flushed or renamed into place.
        """
        if self._staged is None:
            return
        if commit:
            self.finish().commit().finalize()
            return
        file, self._file = self._file, None
        staged, self._staged = self._staged, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        staged.discard()

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(commit=exc_type is None)
