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

__all__ = ["Committed", "Staged", "Storage"]


class Committed(abc.ABC):
    """A published file whose previous version is kept until :meth:`finalize`."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Put back what was at the target before (or remove the target if nothing was)."""

    def settle(self) -> None:  # noqa: B027 (a no-op unless the previous version stays beside)
        """Remove what the previous version had that this one lacks, still restorably.

        :class:`~batchrank.storage.unit.CommitUnit` calls it once every data file and the
        manifest are committed, before the certificates (``_SUCCESS``): a folder of parts on an
        object store publishes its new parts beside the previous ones (a consumer of the
        previous manifest still reads them) and drops the previous ones only here. A no-op
        where the commit itself replaced the previous version."""

    @abc.abstractmethod
    def finalize(self) -> None:
        """Drop the previous version: the commit can no longer be undone."""


class Staged(abc.ABC):
    """A file being written under a temporary name.

    As a context manager it commits (and finalizes) on success and discards on an exception.
    """

    target: Path
    """Where the file is published."""

    keeps_previous = False
    """Whether committing leaves every file of the previous version readable, unchanged, until
    :meth:`Committed.settle` (an object store's folder of parts): the previous manifest may
    then stay in place while the data is committed."""

    @property
    @abc.abstractmethod
    def path(self) -> Path:
        """The local path the writer writes to."""

    def seal(self) -> None:  # noqa: B027 (a no-op unless the storage uploads)
        """Make the written file durable where it will be published, without publishing it
        (an object store uploads it to a staging key). :class:`CommitUnit` seals every file
        before it changes any target, so the slow, failure-prone part (the upload) never
        happens while the previous export is half replaced. A no-op on local disk."""

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
    """A place batchrank publishes to (the local disk, an object store)."""

    @abc.abstractmethod
    def stage(self, target: Path, what: str = "output") -> Staged:
        """A temporary file that :meth:`Staged.commit` publishes at ``target``.

        ``what`` names the file in messages (``output``, ``manifest``, ``rejects``).
        """

    @abc.abstractmethod
    def stage_dir(self, target: Path, what: str = "output") -> Staged:
        """A temporary folder that :meth:`Staged.commit` publishes as ``target`` as a whole
        (a bundle; a folder of part files): the previous folder's files are restored on
        rollback, files it had that the new one lacks are gone after the commit. A writer fills
        :attr:`Staged.path` (a local folder); the previous version is kept until ``finalize``
        so a :class:`~batchrank.storage.unit.CommitUnit` can roll it back."""

    def stage_parts(self, target: Path, what: str = "output") -> Staged:
        """A temporary folder of part files published as ``target`` (like :meth:`stage_dir`).

        Where a folder cannot be replaced in one step (an object store), the new files are
        published beside the previous version's, whose files stay until
        :meth:`Committed.settle`; the writer names each version's files apart
        (:class:`~batchrank.scoring.parts.PartWriter`). Elsewhere the same as
        :meth:`stage_dir`."""
        return self.stage_dir(target, what)

    @abc.abstractmethod
    def withdraw(self, target: Path) -> Committed | None:
        """Move ``target`` aside (None when absent); rolling back restores it."""
