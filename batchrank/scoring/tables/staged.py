"""A table write as the storage primitive: staged data files, then one table transaction.

:class:`TableStaged` is a :class:`~batchrank.storage.base.Staged` whose data files are already
written inside the table's folder but referenced by no commit: readers of Delta Lake and Iceberg
read only the files a commit lists, so staged files are invisible. :meth:`TableStaged.commit`
is the table transaction (a Delta log entry, an Iceberg catalog swap): atomic, all the rows or
none. :meth:`TableStaged.discard` deletes the staged files; files a killed run leaves are just
as invisible and ``batchrank table maintain`` removes them.

A table commit cannot be taken back (a Delta restore or an Iceberg rollback is itself a new
commit), so :meth:`TableCommitted.rollback` only logs: ``commit_run`` makes the table
transaction the last data step, and only the manifest (and no ``_SUCCESS``: a job with a table
output has none) comes after it. A failure there leaves the table committed, with the run id in
its history, and the run fails naming both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from batchrank.fs import redact
from batchrank.storage.base import Committed, Staged

__all__ = ["TableCommitted", "TableStaged"]

log = logging.getLogger("batchrank.score")


class TableCommitted(Committed):
    """A committed table transaction: final as soon as it exists."""

    def __init__(self, what: str) -> None:
        self.what = what

    def rollback(self) -> None:
        log.error(
            "%s stays committed: a table commit is not undone (a later step failed)",
            self.what,
            extra={"event": "table_commit_kept"},
        )

    def finalize(self) -> None:
        pass


class TableStaged(Staged):
    """Data files written into a table, and the one transaction that commits them."""

    def __init__(
        self,
        target: Path,
        *,
        commit: Callable[[], None],
        files: Sequence[str],
        remove: Callable[[str], None],
        record: dict[str, Any],
    ) -> None:
        self.target = target
        """The table's location (an ObjectPath on an object store): its manifest goes beside it."""
        self.location = redact(str(target))
        self.record = record
        """What the commit will be: ``version`` (Delta) or ``snapshot_id`` (Iceberg), files."""
        self._commit = commit
        self._files = list(files)
        self._remove = remove
        self._done = False

    @property
    def path(self) -> Path:
        return self.target

    def commit(self) -> Committed:
        if self._done:
            raise RuntimeError(f"{self.location}: table write already committed or discarded")
        self._commit()
        self._done = True
        return TableCommitted(f"{self.location} ({self.record})")

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        for f in self._files:
            with contextlib.suppress(Exception):
                self._remove(f)
