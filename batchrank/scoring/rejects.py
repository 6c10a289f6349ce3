"""The rejects file: rows the id stage refused, appended to a CSV file published atomically."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

from batchrank.atomic import atomic_file
from batchrank.errors import OutputError
from batchrank.scoring.ids import REJECTS_SCHEMA

__all__ = ["RejectsWriter"]


class _Discard(Exception):
    """Thrown into :func:`atomic_file` to drop the temporary file."""


class RejectsWriter:
    """Appends rejects tables to a CSV file, published atomically.

    The file (header ``file,row,user_id,movie_id,reason``; null ids are empty fields, text is
    quoted) is written under a temporary name beside ``path`` and renamed onto it by
    ``close(commit=True)``; ``close(commit=False)`` deletes it. As a context manager it commits
    on success and discards on an exception.
    """

    def __init__(self, path: Path) -> None:
        """Start a rejects file at ``path`` (created, or replaced on commit).

        Raises:
            OutputError: the folder cannot be created or written.
        """
        self.path = Path(path)
        self.rows = 0
        self._atomic: contextlib.AbstractContextManager[Path] = atomic_file(self.path)
        self._tmp: Path | None = self._atomic.__enter__()
        self._file: BinaryIO | None = None
        try:
            self._file = self._tmp.open("wb")
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

    def close(self, *, commit: bool = True) -> None:
        """Publish the file (``commit=True``) or delete it; later calls do nothing.

        Raises:
            OutputError: the file cannot be flushed or renamed into place.
        """
        file, self._file = self._file, None
        if file is None and self._tmp is None:
            return
        tmp, self._tmp = self._tmp, None
        try:
            if file is not None:
                file.close()
        except OSError as e:
            commit = False
            error: OSError | None = e
        else:
            error = None
        if commit:
            try:
                self._atomic.__exit__(None, None, None)
            except OSError as e:
                raise OutputError(f"{self.path}: cannot commit rejects file ({e.strerror})") from e
        else:
            self._atomic.__exit__(_Discard, _Discard(), None)
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        if error is not None:
            raise OutputError(f"{self.path}: cannot write rejects file ({error.strerror})")

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(commit=exc_type is None)
