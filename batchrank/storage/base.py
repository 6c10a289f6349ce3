"""The publish interface: stage a file under a temporary name, then commit or discard it.

A writer asks a :class:`Storage` for a :class:`Staged` file, writes to its :attr:`Staged.path`,
and calls :meth:`Staged.commit` (publish at the target) or :meth:`Staged.discard` (drop it). A
commit returns a :class:`Committed`, which can still be rolled back (the previous file at the
target comes back) until it is finalized; :class:`batchrank.storage.unit.CommitUnit` uses that
to publish several files as one unit.
"""

from __future__ import annotations

import abc
from pathlib import Path
from types import TracebackType

from batchrank.errors import OutputError

__all__ = ["Committed", "Staged", "Storage"]


class Committed(abc.ABC):
    """A published file whose previous version is kept until :meth:`finalize`."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Put back what was at the target before (or remove the target if nothing was)."""

    @abc.abstractmethod
    def finalize(self) -> None:
        """Drop the previous version: the commit can no longer be undone."""


class Staged(abc.ABC):
    """A file being written under a temporary name.

    As a context manager it commits (and finalizes) on success and discards on an exception.
    """

    target: Path
    """Where the file is published."""

    @property
    @abc.abstractmethod
    def path(self) -> Path:
        """The local path the writer writes to."""

    @abc.abstractmethod
    def commit(self) -> Committed:
        """Publish the file at :attr:`target`; the previous version stays recoverable."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Drop the temporary file; the target is untouched. Safe to call twice."""

    def __enter__(self) -> Path:
        return self.path

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit().finalize()
        else:
            self.discard()


class Storage(abc.ABC):
    """A place batchrank publishes to (a local disk today; an object store next)."""

    @abc.abstractmethod
    def stage(self, target: Path) -> Staged:
        """A temporary file that :meth:`Staged.commit` publishes at ``target``."""

    def stage_dir(self, target: Path, what: str = "output") -> Staged:
        """A temporary folder whose commit publishes its files, and only those, at ``target``.

        A writer fills :attr:`Staged.path` (a local folder) with files; :meth:`Staged.commit`
        replaces whatever was at ``target`` with exactly those files (a re-run with fewer
        files leaves none of the old ones visible), keeping the previous version until
        ``finalize`` so a :class:`~batchrank.storage.unit.CommitUnit` can roll it back.

        Raises:
            OutputError: this storage cannot publish folders.
        """
        raise OutputError(f"{target}: {type(self).__name__} cannot publish a folder of files")

    @abc.abstractmethod
    def withdraw(self, target: Path) -> Committed | None:
        """Move ``target`` aside (None when absent); rolling back restores it."""
