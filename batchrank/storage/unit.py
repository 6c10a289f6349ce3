"""Several files published as one unit: all of them, or none (the previous ones stay).

A run's output, rejects, manifest and ``_SUCCESS`` are one unit. The certificates a consumer
checks (the manifest, ``_SUCCESS``) are moved aside first, the data files are renamed into
place, and the certificates are renamed in last. If any step fails, everything already renamed
is rolled back, so the previous export stays whole; a ``kill -9`` inside the commit can leave
new data without its certificate, never a certificate without its data. Every file is sealed
(:meth:`Staged.seal`: uploaded, on an object store) before the first target changes. Between
the data (with the manifest) and the certificates, each commit is settled
(:meth:`Committed.settle`): an object store's folder of parts drops its previous parts there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from batchrank.storage.base import Committed, Staged, Storage
from batchrank.storage.dispatch import ANY

__all__ = ["CommitUnit"]


class CommitUnit:
    """Commit staged files in order, or roll every one of them back."""

    def __init__(self, storage: Storage = ANY) -> None:
        self.storage = storage
        self._withdraw: list[Path] = []
        self._staged: list[Staged] = []

    def withdraw(self, target: Path) -> None:
        """Move ``target`` aside at the start of the commit (restored if the unit fails)."""
        self._withdraw.append(Path(target))

    def add(self, staged: Staged) -> None:
        """Publish ``staged`` in the unit, after those added before it."""
        self._staged.append(staged)

    def discard(self) -> None:
        """Drop every staged file; nothing is published."""
        for s in self._staged:
            s.discard()

    def commit(self, staged: Sequence[Staged] = (), certificates: Sequence[Staged] = ()) -> None:
        """Publish everything, or nothing: on any error roll back and re-raise.

        ``certificates`` (``_SUCCESS``) are committed after everything else is committed and
        settled (:meth:`Committed.settle`: the previous version's leftover files removed), so
        a certificate never stands beside files of two versions.
        """
        for s in staged:
            self.add(s)
        data = list(self._staged)
        self._staged.extend(certificates)
        done: list[Committed] = []
        try:
            for s in self._staged:
                s.seal()  # every upload done before any target changes
            for target in self._withdraw:
                moved = self.storage.withdraw(target)
                if moved is not None:
                    done.append(moved)
            for s in data:
                done.append(s.commit())
            for c in list(done):
                c.settle()
            for s in certificates:
                done.append(s.commit())
        except BaseException:
            for c in reversed(done):
                with contextlib.suppress(Exception):
                    c.rollback()
            self.discard()
            raise
        for c in done:
            c.finalize()
